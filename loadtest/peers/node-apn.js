// Peer baseline: @parse/node-apn sends the load test's notification to the
// APNs simulator. Prints one JSON line: {"client","requests","ok","failed","secs","rate"}.
//
//   node node-apn.js --addr 127.0.0.1:2197 --ca ../../config/dev/ca.pem \
//     --key ../../config/dev/apns-dev.p8 --requests 100000 --connections 4 --concurrency 400
"use strict";
const fs = require("fs");
const apn = require("@parse/node-apn");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 ? process.argv[i + 1] : dflt;
}

const addr = arg("addr", "127.0.0.1:2197");
const sep = addr.lastIndexOf(":");
const requests = parseInt(arg("requests", "100000"), 10);
const connections = parseInt(arg("connections", "4"), 10);
const concurrency = parseInt(arg("concurrency", "400"), 10);

const provider = new apn.MultiProvider({
  token: { key: fs.readFileSync(arg("key")), keyId: "DEVKEY0001", teamId: "DEVTEAM001" },
  address: addr.slice(0, sep), // the simulator (its certificate names 127.0.0.1)
  port: parseInt(addr.slice(sep + 1), 10),
  ca: fs.readFileSync(arg("ca")), // the dev CA that signed the simulator's certificate
  production: false,
  clientCount: connections,
  requestTimeout: 10000,
});

const note = new apn.Notification();
note.alert = { title: "Hello", body: "Benchmark body text" };
note.topic = "com.example.shop";
note.pushType = "alert";
note.priority = 10;

function token(i) {
  const hex = i.toString(16);
  return "a" + "0".repeat(63 - hex.length) + hex;
}

async function main() {
  // Warm up: connections open and the simulator raises its stream limit.
  await Promise.all(Array.from({ length: connections * 2 }, (_, i) => provider.send(note, token(i))));
  let next = 0, ok = 0, failed = 0, firstError = null;
  const started = process.hrtime.bigint();
  async function worker() {
    while (next < requests) {
      next++;
      const r = await provider.send(note, token(next));
      ok += r.sent.length;
      failed += r.failed.length;
      if (r.failed.length && firstError === null) {
        const f = r.failed[0];
        firstError = f.response ? JSON.stringify(f.response) : String(f.error && f.error.message);
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ client: "@parse/node-apn", requests, ok, failed, secs, rate: ok / secs, first_error: firstError }));
  await provider.shutdown();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
