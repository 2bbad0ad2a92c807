// Pads: one HTTP server for the pages, a small JSON API and the Hocuspocus (Yjs)
// WebSocket endpoint; each pad is one row of PostgreSQL (its Yjs state, and its text for
// reading without an editor). Every request must carry the pads account, or a member's
// when the site runs the members' directory (HTTP Basic, through the proxy's TLS); the
// editor's WebSocket presents a signed token instead.
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Database } from "@hocuspocus/extension-database";
import { Hocuspocus } from "@hocuspocus/server";
import pg from "pg";
import { WebSocketServer } from "ws";
import * as Y from "yjs";

const PORT = 3000;
const WEB = "/opt/pads/web";
const USER = process.env.PADS_USER || "membre";
const PASSWORD = readFileSync("/run/pads/password", "utf8").trim();
const TOKEN_KEY = createHmac("sha256", PASSWORD).update("pads-token").digest();
const TOKEN_SECONDS = 12 * 3600;
const NAME_RE = /^[\p{L}\p{N}][\p{L}\p{N} _.-]{0,79}$/u;

const pool = new pg.Pool({
  host: process.env.PGHOST,
  database: process.env.PGDATABASE,
  user: process.env.PGUSER,
  password: readFileSync("/run/pads/db_password", "utf8").trim(),
  max: 4,
});
// a connection dropped by the server (a restart of PostgreSQL) is replaced at the next query
pool.on("error", (error) => console.error("database:", error.message));

await pool.query(`CREATE TABLE IF NOT EXISTS pads (
  name text PRIMARY KEY,
  state bytea NOT NULL,
  content text NOT NULL DEFAULT '',
  updated timestamptz NOT NULL DEFAULT now())`);

// Text of a pad as the editor shows it: one line per block.
export function padText(doc) {
  const lines = [];
  const walk = (node) => {
    if (node instanceof Y.XmlText) return node.toString().replace(/<[^>]*>/g, "");
    if (node instanceof Y.XmlElement || node instanceof Y.XmlFragment) {
      const parts = node.toArray().map(walk);
      if (node instanceof Y.XmlElement && node.toArray().every((c) => c instanceof Y.XmlText)) {
        lines.push(parts.join(""));
        return "";
      }
      return parts.join("");
    }
    return "";
  };
  walk(doc.getXmlFragment("default"));
  return lines.join("\n");
}

const hocuspocus = new Hocuspocus({
  quiet: true,
  debounce: 1000,
  maxDebounce: 5000,
  async onAuthenticate({ token, documentName }) {
    if (!validToken(token)) throw new Error("not authorised");
    if (!NAME_RE.test(documentName)) throw new Error("bad pad name");
  },
  extensions: [
    new Database({
      async fetch({ documentName }) {
        const found = await pool.query("SELECT state FROM pads WHERE name = $1", [documentName]);
        return found.rows.length ? new Uint8Array(found.rows[0].state) : null;
      },
      async store({ documentName, state, document }) {
        await pool.query(
          `INSERT INTO pads (name, state, content, updated) VALUES ($1, $2, $3, now())
           ON CONFLICT (name) DO UPDATE SET state = $2, content = $3, updated = now()`,
          [documentName, state, padText(document)],
        );
      },
    }),
  ],
});

function makeToken() {
  const expires = String(Math.floor(Date.now() / 1000) + TOKEN_SECONDS);
  return `${expires}.${createHmac("sha256", TOKEN_KEY).update(expires).digest("hex")}`;
}

function validToken(token) {
  const [expires, signature] = String(token || "").split(".");
  if (!expires || !signature || Number(expires) < Date.now() / 1000) return false;
  const expected = createHmac("sha256", TOKEN_KEY).update(expires).digest("hex");
  return signature.length === expected.length &&
    timingSafeEqual(Buffer.from(signature), Buffer.from(expected));
}

// With the members' directory, it checks each request's credentials (204: a member).
const DIRECTORY_AUTH = process.env.DIRECTORY_AUTH || "";

async function authorised(request) {
  if (DIRECTORY_AUTH) {
    if (!request.headers.authorization) return false;
    try {
      const answer = await fetch(DIRECTORY_AUTH, {
        headers: { authorization: request.headers.authorization },
        signal: AbortSignal.timeout(10000),
      });
      return answer.status === 204;
    } catch {
      return false; // the directory down: refused
    }
  }
  const [scheme, encoded] = String(request.headers.authorization || "").split(" ");
  if (scheme?.toLowerCase() !== "basic" || !encoded) return false;
  const decoded = Buffer.from(encoded, "base64").toString("utf8");
  const given = Buffer.from(decoded);
  const expected = Buffer.from(`${USER}:${PASSWORD}`);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

const escape = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const PAGE = readFileSync(`${WEB}/index.html`, "utf8")
  .replaceAll("@LANG@", process.env.PADS_LANG === "en" ? "en" : "fr")
  .replaceAll("@TITLE@", escape(process.env.PADS_TITLE || ""));
const STATIC = {
  "/static/app.js": [readFileSync(`${WEB}/app.js`, "utf8"), "text/javascript; charset=utf-8"],
  "/static/style.css": [readFileSync(`${WEB}/style.css`, "utf8"), "text/css; charset=utf-8"],
};

function send(response, status, body, type = "application/json; charset=utf-8") {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  response.writeHead(status, {
    "Content-Type": type,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
  });
  response.end(text);
}

async function handle(request, response) {
  const url = new URL(request.url, "http://pads");
  if (url.pathname === "/healthz" && request.socket.remoteAddress === "127.0.0.1") {
    await pool.query("SELECT 1");
    return send(response, 200, { ok: true });
  }
  if (!(await authorised(request))) {
    response.writeHead(401, { "WWW-Authenticate": 'Basic realm="Pads", charset="UTF-8"' });
    return response.end("Login required.\n");
  }
  if (request.method !== "GET") return send(response, 405, { error: "method not allowed" });
  if (url.pathname === "/" || url.pathname.startsWith("/p/")) {
    return send(response, 200, PAGE, "text/html; charset=utf-8");
  }
  if (STATIC[url.pathname]) return send(response, 200, ...STATIC[url.pathname]);
  if (url.pathname === "/api/token") return send(response, 200, { token: makeToken() });
  if (url.pathname === "/api/pads") {
    const found = await pool.query("SELECT name, updated FROM pads ORDER BY updated DESC");
    return send(response, 200, { pads: found.rows });
  }
  const text = url.pathname.match(/^\/api\/pads\/([^/]+)\/text$/);
  if (text) {
    const name = decodeURIComponent(text[1]);
    const found = await pool.query("SELECT content FROM pads WHERE name = $1", [name]);
    if (!found.rows.length) return send(response, 404, { error: "no such pad" });
    return send(response, 200, found.rows[0].content, "text/plain; charset=utf-8");
  }
  return send(response, 404, { error: "not found" });
}

const server = createServer((request, response) => {
  handle(request, response).catch((error) => {
    console.error(error);
    if (!response.headersSent) send(response, 500, { error: "internal error" });
  });
});
const sockets = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });
server.on("upgrade", (request, socket, head) => {
  if (new URL(request.url, "http://pads").pathname !== "/ws") return socket.destroy();
  sockets.handleUpgrade(request, socket, head, (ws) => {
    ws.on("error", (error) => console.error("websocket:", error.message));
    hocuspocus.handleConnection(ws, request);
  });
});

async function shutdown() {
  // closing the connections stores every open pad at once; then leave
  server.close();
  hocuspocus.closeConnections();
  const deadline = Date.now() + 10000;
  while (hocuspocus.getDocumentsCount() > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await pool.end();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
server.listen(PORT, "0.0.0.0");
