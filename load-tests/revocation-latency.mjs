// Time from a logout request to the close frame (4003) on the session's
// live WebSocket. Uses the `ws` package installed for the SDK:
//   (cd client-sdk && npm ci)
//   node load-tests/revocation-latency.mjs http://127.0.0.1:8080 default admin@example.com PASSWORD [samples]
import { createRequire } from "node:module";

const require = createRequire(new URL("../client-sdk/package.json", import.meta.url));
const WebSocket = require("ws");

const [base, tenant, email, password, samplesArg] = process.argv.slice(2);
if (!password) {
  console.error("usage: revocation-latency.mjs BASE_URL TENANT EMAIL PASSWORD [SAMPLES]");
  process.exit(2);
}
const samples = Number(samplesArg ?? 20);
const wsUrl = base.replace(/^http/, "ws") + "/ws";
const times = [];
for (let i = 0; i < samples; i++) {
  const res = await fetch(`${base}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ tenant, email, password }),
  });
  const { access_token } = await res.json();
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  ws.send(JSON.stringify({ id: 1, type: "connect", token: access_token }));
  await new Promise((resolve) => ws.once("message", resolve));
  const closed = new Promise((resolve) => ws.once("close", (code) => resolve(code)));
  const start = performance.now();
  await Promise.all([
    fetch(`${base}/api/v1/auth/logout`, { method: "POST", headers: { authorization: `Bearer ${access_token}` } }),
    closed.then((code) => times.push({ ms: performance.now() - start, code })),
  ]);
}
times.sort((a, b) => a.ms - b.ms);
const ms = (i) => Number(times[i].ms.toFixed(2));
console.log(JSON.stringify({
  scenario: "revocation",
  samples: times.length,
  close_codes: [...new Set(times.map((t) => t.code))],
  min_ms: ms(0),
  median_ms: ms(Math.floor(times.length / 2)),
  max_ms: ms(times.length - 1),
}));
