"""Convert the Python reference documentation shipped with CPython into JSONL.

`pydoc_data.topics` holds the text that `help("assert")` prints: 79 topics of the
Python Language Reference (PSF licence). Each prose paragraph becomes one record
`{"text": ..., "topic": ...}`; code blocks, grammar rules and headings are skipped.

The committed `data/raw/pydoc_topics.jsonl` is the source of truth: the topics change
between Python releases, so rerunning this script on another Python may give a
different file. The Python version that produced it is recorded in data/README.md.

    python data/make_pydoc_topics.py data/raw/pydoc_topics.jsonl
"""

import json
import re
import sys
from pathlib import Path

MIN_CHARS = 200  # shorter paragraphs are mostly headings and list stubs
MAX_CHARS = 1200  # longer ones would be cut by the default max_length anyway


def paragraphs(topic_text: str) -> list[str]:
    """Prose paragraphs of one topic, each reflowed onto a single line."""
    kept = []
    for block in topic_text.split("\n\n"):
        lines = block.splitlines()
        if not lines or lines[0].startswith(" "):  # indented: code, grammar, tables
            continue
        if any(re.fullmatch(r"[*=\-^\"]{3,}", line.strip()) for line in lines):
            continue  # a heading underline
        text = " ".join(line.strip() for line in lines)
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            kept.append(text)
    return kept


def main(out: Path) -> None:
    from pydoc_data.topics import topics

    records = [{"text": text, "topic": name} for name in sorted(topics) for text in paragraphs(topics[name])]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records to {out} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/raw/pydoc_topics.jsonl"))
