"""Ollama Modelfiles for a version's GGUF: FROM (and ADAPTER), the chat template in Go syntax, SYSTEM, stop tokens."""

import re

# ChatML (SmolLM2, Qwen, ...) in Ollama's Go template syntax: the system message (Ollama passes a request's system
# message as .System; SYSTEM gives the default the Jinja template inserts), each other message, then the
# assistant's turn opened for the reply.
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
RAW_TEMPLATE = "{{ .Prompt }}"


def default_system(chat_template: str) -> str | None:
    """The system message a ChatML template inserts when a conversation has none, if it is a literal string
    (a newline written as is or as the escape \\n); None when it is built from variables or there is none."""
    for found in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", chat_template, re.S):
        if not any(mark in found[1] for mark in ("'", '"', "{{", "{%", "+")):
            return found[1].replace("\\n", "\n")
    return None


def modelfile(
    model_file: str, *, chat: bool, chat_template: str | None, eos: str | None, adapter: str | None = None
) -> str:
    """An Ollama Modelfile for a GGUF: FROM (and ADAPTER), TEMPLATE in Go syntax, SYSTEM, stop tokens.

    A version trained on conversations gets its chat template translated (ChatML only; other families keep
    the GGUF's own `tokenizer.chat_template`, which Ollama reads for the families it knows); a version trained
    on plain text or prompt-completion pairs gets the prompt as is, as it was trained.
    """
    lines = [f"FROM ./{model_file}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    stops = [eos] if eos else []
    if chat and chat_template and "<|im_start|>" in chat_template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        if default := default_system(chat_template):
            lines.append(f'SYSTEM """{default}"""')
        stops = list(dict.fromkeys(["<|im_end|>", "<|im_start|>", *stops]))
    elif chat:
        lines.append("# TEMPLATE: left to Ollama, which reads the GGUF's tokenizer.chat_template for known families")
    else:
        lines.append(f'TEMPLATE """{RAW_TEMPLATE}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"
