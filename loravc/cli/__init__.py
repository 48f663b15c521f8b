"""The `loravc` command: arguments and what each verb prints."""
