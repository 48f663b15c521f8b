"""What every stage needs: errors, params' shared rules, schema and type checks, devices, metadata, tracking."""
