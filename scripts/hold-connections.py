#!/usr/bin/env python3
"""Holds as many TLS connections to a keysafe server as it will keep, from one source address,
for a while: the attacker of the per-address connection cap (BENCHMARKS.md, "Edges").

Each of N tasks connects from SRC, completes the TLS handshake without a client certificate,
then trickles an HTTP/1.1 request header (one header line every 2 s) so the connection stays
busy for as long as the server allows; when the server closes it, the task connects again at
once. Prints how many connections were held on average and how many attempts were refused.

usage: hold-connections.py HOST PORT SRC N SECONDS
"""
import asyncio
import ssl
import sys
import time

HOST, PORT, SRC, N, SECONDS = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
held = 0
refused = 0
opened = 0
samples = []


async def holder(deadline):
    global held, refused, opened
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(HOST, PORT, ssl=ctx, local_addr=(SRC, 0),
                                        server_hostname="localhost"),
                timeout=5)
        except Exception:
            refused += 1
            await asyncio.sleep(0.05)
            continue
        opened += 1
        held += 1
        try:
            w.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            await w.drain()
            while time.monotonic() < deadline:
                w.write(b"X-Slow: 1\r\n")
                await w.drain()
                try:
                    data = await asyncio.wait_for(r.read(1), timeout=2)
                    if not data:
                        break
                except asyncio.TimeoutError:
                    pass
        except Exception:
            pass
        finally:
            held -= 1
            w.close()


async def sampler(deadline):
    while time.monotonic() < deadline:
        samples.append(held)
        await asyncio.sleep(0.5)


async def main():
    deadline = time.monotonic() + SECONDS
    await asyncio.gather(sampler(deadline), *(holder(deadline) for _ in range(N)))
    steady = samples[len(samples) // 4:] or [0]
    print(f"attacker {SRC}: {N} tasks, held on average {sum(steady) / len(steady):.0f} "
          f"(max {max(samples or [0])}), {opened} connections opened, {refused} attempts refused")


asyncio.run(main())
