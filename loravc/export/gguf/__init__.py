"""GGUF files of a version for llama.cpp, Ollama and LM Studio: the merged model, the adapter alone, the base alone.

model.py (format `gguf`, and `--base-only`) and lora.py (format `gguf-lora`) are the formats; writer.py writes
the files, checks.py reads a whole model back before it is kept, ollama.py writes the Modelfile, common.py holds
what the two formats share.
"""
