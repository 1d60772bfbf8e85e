#!/usr/bin/python3
"""Wait until an engine color has no request in flight, or a timeout passes.

Reads llama-server's /metrics (llamacpp:requests_processing) with the API key
from a file (never from the command line). Prints one JSON line; exits 0 either
way (a request that outlives the timeout is cut when the color stops).
Usage: llmfleet-wait-idle.py URL KEY_FILE TIMEOUT_SECONDS
"""

import json
import sys
import time
import urllib.request


def processing(url: str, key: str) -> float | None:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("llamacpp:requests_processing "):
            return float(line.split()[1])
    return None


def main() -> int:
    url, key_file, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    key = ""
    if key_file:
        with open(key_file, encoding="utf-8") as handle:
            key = handle.read().strip()
    deadline = time.monotonic() + timeout
    value = processing(url, key)
    while value and time.monotonic() < deadline:
        time.sleep(1)
        value = processing(url, key)
    print(json.dumps({"idle": not value, "requests_processing": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
