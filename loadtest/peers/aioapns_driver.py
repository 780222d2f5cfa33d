"""Peer baseline: aioapns sends the load test's notification to the APNs simulator.

Prints one JSON line: {"client","requests","ok","failed","secs","rate"}.

    .venv/bin/python aioapns_driver.py --addr 127.0.0.1:2197 --ca ../../config/dev/ca.pem \
        --key ../../config/dev/apns-dev.p8 --requests 50000 --connections 4 --concurrency 400

aioapns has no endpoint option: the host and port are class attributes of
its development protocol, set here to the simulator's (its TLS certificate
names 127.0.0.1), and the dev CA is passed as the SSL context.
"""
import argparse
import asyncio
import json
import logging
import ssl
import time

from aioapns import APNs, NotificationRequest, PushType
from aioapns import connection as aioconn


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="127.0.0.1:2197")
    p.add_argument("--ca", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--requests", type=int, default=50000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=400)
    return p.parse_args()


def token(i):
    h = format(i, "x")
    return "a" + "0" * (63 - len(h)) + h


async def main(a):
    host, port = a.addr.rsplit(":", 1)
    aioconn.APNsDevelopmentClientProtocol.APNS_SERVER = host
    aioconn.APNsDevelopmentClientProtocol.APNS_PORT = int(port)
    ctx = ssl.create_default_context(cafile=a.ca)
    with open(a.key) as f:
        key = f.read()
    client = APNs(key=key, key_id="DEVKEY0001", team_id="DEVTEAM001", topic="com.example.shop",
                  use_sandbox=True, max_connections=a.connections, ssl_context=ctx)
    message = {"aps": {"alert": {"title": "Hello", "body": "Benchmark body text"}}}

    async def send(i):
        r = await client.send_notification(NotificationRequest(
            device_token=token(i), message=message, push_type=PushType.ALERT, priority=10))
        if not r.is_successful and counter["first_error"] is None:
            counter["first_error"] = f"{r.status} {r.description}"
        return r.is_successful

    counter = {"next": 0, "ok": 0, "failed": 0, "first_error": None}
    for i in range(a.connections * 2):  # warm up
        await send(i)

    async def worker():
        while counter["next"] < a.requests:
            counter["next"] += 1
            if await send(counter["next"]):
                counter["ok"] += 1
            else:
                counter["failed"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    secs = time.perf_counter() - started
    print(json.dumps({"client": "aioapns", "requests": a.requests, "ok": counter["ok"],
                      "failed": counter["failed"], "secs": secs, "rate": counter["ok"] / secs,
                      "first_error": counter["first_error"]}))


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parse()))
