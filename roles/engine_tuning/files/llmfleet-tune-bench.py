#!/usr/bin/python3
"""One candidate's benchmark, on the host, against the idle color on loopback.

llmfleet's own benchmark (llmfleet.bench, copied beside this script by the
engine_tuning role; standard library only) at one concurrency level. The API key
is read from a file, never from the command line. Writes the llmfleet.bench/2
document to OUTPUT.

Usage: llmfleet-tune-bench.py ENDPOINT KEY_FILE CONCURRENCY REQUESTS INPUT_TOKENS
       OUTPUT_TOKENS OUTPUT
"""

import json
import sys
from pathlib import Path

from llmfleet.bench import BenchConfig, Level, run_benchmark


def main(argv: list[str]) -> int:
    endpoint, key_file, concurrency, requests, input_tokens, output_tokens, output = argv
    key = Path(key_file).read_text().strip() if key_file else None
    config = BenchConfig(
        endpoint=endpoint,
        levels=(Level(concurrency=int(concurrency)),),
        requests=int(requests),
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        api_key=key or None,
    )
    document = run_benchmark(config)
    Path(output).write_text(json.dumps(document))
    level = document["levels"][0]
    print(
        json.dumps(
            {
                "succeeded": level["succeeded"],
                "failed": level["failed"],
                "output_tokens_per_s": level["throughput"]["output_tokens_per_s"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
