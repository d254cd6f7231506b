#!/usr/bin/env node
// Starts Azurite's Blob service (pinned in tools/emulators/package.json) in this process on
// 127.0.0.1:<port>, in memory, telemetry off, accepting the API version the Rust SDK sends.
//
//   node tools/azurite.js <port> [--exit-with-stdin]
//
// Prints "Azurite Blob service successfully listens on ..." when ready. With --exit-with-stdin
// it exits when its stdin closes, so a test process that dies (even by SIGKILL) never leaves
// it running.
"use strict";
const path = require("path");
const req = require("module").createRequire(path.join(__dirname, "emulators", "package.json"));

const port = String(parseInt(process.argv[2] || "10000", 10));
const watchStdin = process.argv.includes("--exit-with-stdin");
const main = path.join(path.dirname(req.resolve("azurite/package.json")), "dist", "src", "blob", "main.js");
process.argv = [process.argv[0], main,
  "--blobHost", "127.0.0.1", "--blobPort", port,
  "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--loose"];
if (watchStdin) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("close", () => process.exit(0));
  process.stdin.resume();
}
require(main);
