// The Agents "GET /api/agents/:id" endpoint as a team would write it in Node.js + Express:
// verify the EdDSA bearer token (jose), read the tenant's row from the same SQLite file
// (better-sqlite3), answer JSON with an ETag. Used only by the benchmark, as the baseline.
//
// WORKERS=n (default 1) runs n Express workers under Node's cluster module (one per core is how
// a Node team serves this on a multi-core machine); WORKERS=1 is one plain process.
// TOKEN_CACHE=1 remembers verified tokens for up to 60 s (bounded by their exp), as Flowgrid's
// verifier does, for a like-for-like comparison; by default every request verifies the signature.
"use strict";
const cluster = require("node:cluster");

const workers = Math.max(1, Number(process.env.WORKERS || 1));

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let listening = 0;
  cluster.on("listening", () => {
    if (++listening === workers) console.log(`cluster: ${workers} workers listening`);
  });
  cluster.on("exit", (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
    process.exit(1);
  });
} else {
  serve();
}

function serve() {
  const express = require("express");
  const Database = require("better-sqlite3");
  const jose = require("jose");

  const port = Number(process.env.PORT || 7199);
  const db = new Database(process.env.DB_PATH, { readonly: true, fileMustExist: true });
  db.pragma("busy_timeout = 10000");
  const jwks = jose.createLocalJWKSet(JSON.parse(process.env.JWKS));
  const issuer = process.env.ISSUER;
  const audience = process.env.AUDIENCE;
  const byId = db.prepare("SELECT doc, etag FROM agents WHERE tenant_id = ? AND id = ?");
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const cacheTokens = process.env.TOKEN_CACHE === "1";
  const verified = new Map(); // token -> { claims, until (ms) }
  const verify = async (token) => {
    const now = Date.now();
    const hit = cacheTokens && verified.get(token);
    if (hit && now < hit.until) return hit.claims;
    const { payload } = await jose.jwtVerify(token, jwks, {
      issuer, audience, algorithms: ["EdDSA", "ES256"], typ: "at+jwt", clockTolerance: 60,
    });
    if (cacheTokens) {
      if (verified.size >= 10000) verified.clear();
      verified.set(token, { claims: payload, until: Math.min(now + 60000, (payload.exp + 60) * 1000) });
    }
    return payload;
  };

  const problem = (res, status, detail) =>
    res.status(status).type("application/problem+json").send(JSON.stringify({ type: "about:blank", status, detail }));

  const app = express();
  app.disable("x-powered-by");
  app.get("/", (_req, res) => res.send("ok"));
  app.get("/api/agents/:id", async (req, res) => {
    const auth = req.get("authorization") || "";
    if (!auth.startsWith("Bearer ")) return problem(res, 401, "A valid bearer token is required.");
    let claims;
    try {
      claims = await verify(auth.slice(7));
    } catch {
      return problem(res, 401, "A valid bearer token is required.");
    }
    if (!UUID.test(req.params.id)) return problem(res, 400, "not an agent id");
    const row = byId.get(claims.tid, req.params.id);
    if (!row) return problem(res, 404, "No such resource.");
    const agent = JSON.parse(row.doc);
    agent.etag = row.etag;
    res.set("ETag", `"${row.etag}"`).json(agent);
  });
  app.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port} (pid ${process.pid})`));
}
