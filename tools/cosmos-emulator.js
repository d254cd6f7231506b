#!/usr/bin/env node
// Starts @vercel/cosmosdb-server (pinned in tools/emulators/package.json) with five fixes the
// official Rust SDK needs, applied by patching modules before the server's routes load; no file
// in node_modules is edited. See docs/storage.md and the probe notes it cites.
//
//   node tools/cosmos-emulator.js <port> [--no-ssl]
//
// Prints "Ready to accept HTTP(S) connections at 127.0.0.1:<port>" when listening. Exits when
// its stdin closes, so a test process that dies (even by SIGKILL) never leaves it running.
"use strict";
const path = require("path");
const req = require("module").createRequire(path.join(__dirname, "emulators", "package.json"));
const PKG = "@vercel/cosmosdb-server";

const PKR = req(`${PKG}/lib/account/partition-key-range`).default;
const Item = req(`${PKG}/lib/account/item`).default;

// Fix 2: a missing document throws a TypeError (500); answer 404 as Cosmos does.
const rd = req(`${PKG}/lib/handler/read-document`);
const origRead = rd.default;
rd.default = (a, request, res, p) => {
  try {
    return origRead(a, request, res, p);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    res.statusCode = 404;
    return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
  }
};

// Fix 3: batch operations need a per-operation partitionKey; the Rust SDK sends it once as a header.
const { AsyncLocalStorage } = require("async_hooks");
const batchPk = new AsyncLocalStorage();
const ops = req(`${PKG}/lib/handler/_document-operations`);
for (const n of ["createOperation", "upsertOperation", "readOperation", "deleteOperation", "replaceOperation"]) {
  const o = ops[n];
  ops[n] = (c, i) => {
    const pk = batchPk.getStore();
    return o(c, i && i.partitionKey === undefined && pk !== undefined ? { ...i, partitionKey: pk } : i);
  };
}
const bd = req(`${PKG}/lib/handler/batch-documents`);
const origBatch = bd.default;
bd.default = (a, request, res, p) =>
  batchPk.run(request.headers["x-ms-documentdb-partitionkey"], () => origBatch(a, request, res, p));

// Fix 5: a query the SDK sends to a partition key range (`x-ms-documentdb-partitionkeyrangeid`,
// how it runs a full-container query, one range at a time, with no partition key) is a
// cross-partition query; the server only knows the `enablecrosspartition` header, and without
// it refuses a query whose text does not name the partition key ("missing partition keys").
const qd = req(`${PKG}/lib/handler/query-documents`);
const origQuery = qd.default;
qd.default = (a, request, res, p) => {
  if (request.headers["x-ms-documentdb-partitionkeyrangeid"] !== undefined &&
      request.headers["x-ms-documentdb-partitionkey"] === undefined) {
    request.headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  return origQuery(a, request, res, p);
};

// Fix 4: with --no-ssl, advertise http:// region endpoints (else the SDK speaks TLS to the HTTP port).
const nossl = process.argv.includes("--no-ssl");
const accMod = req(`${PKG}/lib/account`);
const OrigAccount = accMod.default;
accMod.default = class extends OrigAccount {
  constructor(h, p) {
    super(h, p);
    if (nossl) {
      const d = this.read();
      for (const l of [...d.writableLocations, ...d.readableLocations]) {
        l.databaseAccountEndpoint = l.databaseAccountEndpoint.replace("https://", "http://");
      }
    }
  }
};

const { createHttpServer, createHttpsServer } = req(PKG);

// Fix 1 (blocker): partition key range ids must be strings; the server makes them numbers.
PKR.prototype.read = function () {
  const d = Item.prototype.read.call(this);
  return d && typeof d.id === "number" ? { ...d, id: String(d.id) } : d;
};

const port = parseInt(process.argv[2] || "8081", 10);
const server = (nossl ? createHttpServer : createHttpsServer)();
server.listen(port, "127.0.0.1", () =>
  console.log(`Ready to accept HTTP${nossl ? "" : "S"} connections at 127.0.0.1:${port}`));

if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("close", () => process.exit(0));
  process.stdin.resume();
}
