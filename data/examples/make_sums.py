"""Write the small example datasets of docs/data.md: questions about sums of two numbers, in two shapes.

    python data/examples/make_sums.py          # writes data/examples/sums-chat/ and data/examples/sums-pc/

Each directory holds train.jsonl (120 records) and a fixed test.jsonl (40 records, no question of
which is in train.jsonl). sums-chat holds `messages` records (system, user, assistant); sums-pc the
same questions as prompt/completion records. Deterministic: the same files every time.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM = "Answer with the number only."


def questions() -> list[tuple[str, str]]:
    pairs = [(a, b) for a in range(1, 40) for b in range(1, 40)]
    random.Random(0).shuffle(pairs)
    return [(f"What is {a} plus {b}?", f"{a + b}") for a, b in pairs[:160]]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    found = questions()
    for name, rows in {"train": found[:120], "test": found[120:]}.items():
        chat = [
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            }
            for q, a in rows
        ]
        write(HERE / "sums-chat" / f"{name}.jsonl", chat)
        write(
            HERE / "sums-pc" / f"{name}.jsonl",
            [{"prompt": f"Question: {q}\nAnswer:", "completion": f" {a}"} for q, a in rows],
        )


if __name__ == "__main__":
    main()
