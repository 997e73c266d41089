"""Load generator for a running seqtag service: real EWT sentences, fixed concurrency, bounded, loopback.

    .venv/bin/python -m benchmarks.http_load --url http://127.0.0.1:8000 --concurrency 32 --requests 3000

Each request tags ``--sentences-per-request`` sentences drawn from a CoNLL-U file. Stops after
``--requests`` requests or ``--duration`` seconds, whichever comes first, and prints requests/s,
tokens/s, latency percentiles and the errors by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import logging
import time
from urllib.parse import urlparse

from training.tagger.data import read_conllu

logger = logging.getLogger("benchmarks.http_load")


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))] if sorted_values else float("nan")


def run_load(url, path, bodies, concurrency, max_requests, duration):
    """-> (latencies, tokens tagged, errors Counter, seconds).

    One asyncio task per connection (HTTP/1.1 keep-alive), requests pre-encoded and responses read by
    Content-Length: the generator shares the cores with the server, so it must cost the server as little
    CPU as possible (``http.client`` in 32 threads took about a third of a core at 500 requests/s).
    """
    target = urlparse(url)
    if target.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("this load generator only targets loopback addresses")
    requests = [(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (path.encode(), target.netloc.encode(), len(body)) + body, n_tokens) for body, n_tokens in bodies]
    return asyncio.run(_load(target.hostname, target.port, requests, concurrency, max_requests, duration))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def _load(host, port, requests, concurrency, max_requests, duration):
    counter = itertools.count()
    latencies, errors, tokens = [], collections.Counter(), [0]
    deadline = time.monotonic() + duration

    async def connection():
        reader = writer = None
        while time.monotonic() < deadline:
            index = next(counter)
            if index >= max_requests:
                break
            request, n_tokens = requests[index % len(requests)]
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                status, payload = await asyncio.wait_for(_read_response(reader), 60)
                elapsed = time.perf_counter() - start
                if status == 200:
                    latencies.append(elapsed)
                    tokens[0] += n_tokens
                else:
                    errors[f"HTTP {status} {json.loads(payload)['error']['code']}"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
                errors[type(error).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return sorted(latencies), tokens[0], errors, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="pos")
    parser.add_argument("--data", default="../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests")
    parser.add_argument("--duration", type=float, default=60.0, help="at most this many seconds")
    parser.add_argument("--sentences-per-request", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sentences = [list(s.words) for s in read_conllu(args.data)]
    k = args.sentences_per_request
    bodies = [(json.dumps({"sentences": sentences[i:i + k]}).encode(), sum(len(s) for s in sentences[i:i + k]))
              for i in range(0, len(sentences) - k + 1, k)]
    path = f"/v1/models/{args.model}:tag"
    latencies, tokens, errors, seconds = run_load(args.url, path, bodies, args.concurrency, args.requests, args.duration)
    done = len(latencies)
    logger.info("concurrency %d, %d sentence(s) per request: %d ok, %d errors in %.1f s", args.concurrency, k, done,
                sum(errors.values()), seconds)
    logger.info("requests/s %.1f   tokens/s %.0f   latency ms p50 %.1f  p90 %.1f  p99 %.1f", done / seconds,
                tokens / seconds, 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.9),
                1000 * percentile(latencies, 0.99))
    for kind, count in errors.most_common():
        logger.info("  error %s: %d", kind, count)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
