// Node's socket.io with the Redis adapter: the peer of benchmarks/side_by_side.py.
//
// Subscribers connect with the WebSocket transport and emit `join` with a room name (the
// ack says they are in). POST /publish {"room", "event", "data"} emits into the room; the
// Redis adapter also publishes it for other servers sharing the key. GET /healthz is 200.
//
//   node server.js --port 9003 --redis redis://127.0.0.1:6379/0 --key bench-1
//
// Pings every 300 s: the benchmark's subscribers only read, and a load point lasts ~20 s.
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    redis: { type: "string", default: "redis://127.0.0.1:6379/0" },
    key: { type: "string", default: "socket.io" },
  },
});

const pubClient = new Redis(args.redis);
const subClient = pubClient.duplicate();

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.end("ok");
    return;
  }
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404).end("not found");
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const { room, event, data } = JSON.parse(Buffer.concat(chunks).toString());
    io.to(room).emit(event, data);
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
});

const io = new Server(server, {
  transports: ["websocket"],
  pingInterval: 300000,
  pingTimeout: 60000,
  adapter: createAdapter(pubClient, subClient, { key: args.key }),
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
});

server.listen(Number(args.port), args.host);
process.on("SIGTERM", () => {
  io.close();
  pubClient.quit();
  subClient.quit();
  process.exit(0);
});
