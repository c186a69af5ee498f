// End-to-end tests: real Node.js Redis clients against a running roomproxy.
//
//   ROOMPROXY_URL=redis://127.0.0.1:6380 REDIS_DIRECT_URL=redis://127.0.0.1:6379 node run.mjs [filter...]
//
// Normally started by run.sh, which brings up redis-server and roomproxy.
// Each test runs with a 10 s timeout and prints "ok - name" or
// "not ok - name: error"; the last line is "N passed, N failed" and the exit
// code is 1 if anything failed. Optional arguments keep only the tests whose
// name contains one of them.
//
// The tests here never hold the proxy to less than Redis itself: pointing
// ROOMPROXY_URL at redis-server passes everything except the FLUSHALL checks
// (which refuse to run then), a quick way to check a new test.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

import IORedis5 from "ioredis5";
import IORedis6 from "ioredis6";
import { createClient, defineScript, RESP_TYPES, WatchError } from "redis5";
import { Server as SocketIOServer } from "socket.io";
import { io as socketIOClient } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";

const PROXY_URL = process.env.ROOMPROXY_URL;
const DIRECT_URL = process.env.REDIS_DIRECT_URL;
if (!PROXY_URL || !DIRECT_URL) {
  console.error("run.mjs: set ROOMPROXY_URL and REDIS_DIRECT_URL (or use run.sh)");
  process.exit(2);
}

const TEST_TIMEOUT_MS = 10_000;
const CLEANUP_TIMEOUT_MS = 3_000;
// Whole-suite budget: once used up (say, a proxy that accepts and never
// answers makes every test wait out its timeout), the remaining tests are
// reported failed without running, so a run stays under 2 minutes.
const SUITE_BUDGET_MS = Number(process.env.E2E_BUDGET_MS || 100_000);

// ---------------------------------------------------------------- runner

const tests = [];
function test(name, fn) {
  tests.push({ name, fn });
}

// Errors that escape a test (a rejected promise nobody awaited, an 'error'
// event after the test gave up) must not crash the runner.
// E2E_VERBOSE=1 prints them.
let strayErrors = 0;
function stray(err) {
  strayErrors++;
  if (process.env.E2E_VERBOSE) console.log(`#   stray error: ${oneLine(err)}`);
}
process.on("unhandledRejection", stray);
process.on("uncaughtException", stray);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function oneLine(err) {
  let msg;
  if (err instanceof Error) {
    msg = err.message || err.name;
    if (err.name && err.name !== "Error" && !msg.startsWith(err.name)) {
      msg = `${err.name}: ${msg}`;
    }
    // Aggregate errors from client libraries: show the first inner one.
    if (Array.isArray(err.errors) && err.errors.length > 0 && !msg) {
      msg = oneLine(err.errors[0]);
    }
  } else {
    msg = String(err);
  }
  msg = msg.replace(/\s+/g, " ").trim();
  return msg.length > 400 ? msg.slice(0, 400) + "..." : msg;
}

class Context {
  constructor(name) {
    this.name = name;
    this.cleanups = [];
    // Unique key prefix: e2e:<test>:<random>.
    const slug = name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
    this.prefix = `e2e:${slug}:${randomBytes(4).toString("hex")}`;
  }
  key(suffix) {
    return `${this.prefix}:${suffix}`;
  }
  // Registers fn to run after the test, pass, fail or timeout (last first).
  defer(fn) {
    this.cleanups.push(fn);
  }
  async runCleanups() {
    const fns = this.cleanups.reverse();
    this.cleanups = [];
    for (const fn of fns) {
      try {
        await withTimeout(Promise.resolve().then(fn), CLEANUP_TIMEOUT_MS, "cleanup");
      } catch {
        // a client that will not close cleanly is closed harder by process.exit
      }
    }
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Polls cond() until it returns a truthy value or ms pass.
async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await cond();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function main() {
  const filters = process.argv.slice(2);
  const selected = filters.length
    ? tests.filter((t) => filters.some((f) => t.name.includes(f)))
    : tests;
  let passed = 0;
  let failed = 0;
  const started = Date.now();
  for (const t of selected) {
    if (Date.now() - started > SUITE_BUDGET_MS) {
      failed++;
      console.log(`not ok - ${t.name}: not run, the suite's ${SUITE_BUDGET_MS / 1000} s budget is used up`);
      continue;
    }
    const ctx = new Context(t.name);
    const t0 = Date.now();
    let error;
    try {
      await withTimeout(Promise.resolve().then(() => t.fn(ctx)), TEST_TIMEOUT_MS, "test");
    } catch (err) {
      error = err;
    }
    await ctx.runCleanups();
    await deleteKeys(`${ctx.prefix}:*`);
    const ms = Date.now() - t0;
    if (error === undefined) {
      passed++;
      console.log(`ok - ${t.name} (${ms} ms)`);
    } else {
      failed++;
      console.log(`not ok - ${t.name}: ${oneLine(error)} (${ms} ms)`);
    }
  }
  console.log(`# ${selected.length} tests in ${((Date.now() - started) / 1000).toFixed(1)} s` +
    (strayErrors ? `, ${strayErrors} stray errors after tests gave up` : ""));
  console.log(`${passed} passed, ${failed} failed`);
  cleaner?.disconnect();
  process.exit(failed > 0 || selected.length === 0 ? 1 : 0);
}

// ---------------------------------------------------------------- clients

// Deletes, straight on redis-server, the keys a test left behind (a failed
// test stops before its own DEL). KEYS/SCAN over the keyspace are refused by
// the proxy, so this goes direct.
let cleaner;
async function deleteKeys(pattern) {
  try {
    if (!cleaner) {
      cleaner = new IORedis5(DIRECT_URL, { maxRetriesPerRequest: 1 });
      cleaner.on("error", () => {});
    }
    let cursor = "0";
    do {
      const [next, keys] = await withTimeout(cleaner.scan(cursor, "MATCH", pattern, "COUNT", 1000), 2000, "SCAN");
      if (keys.length) await cleaner.unlink(...keys);
      cursor = next;
    } while (cursor !== "0");
  } catch (err) {
    console.log(`# could not delete ${pattern} on redis-server: ${oneLine(err)}`);
  }
}

// A direct connection to redis-server, for looking behind the proxy.
async function direct(ctx) {
  const c = new IORedis5(DIRECT_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: true });
  c.on("error", () => {});
  ctx.defer(() => c.disconnect());
  if (c.status !== "ready") await once(c, "ready");
  return c;
}

// Every client variant under test. kind selects the API flavour.
const variants = [
  { name: "ioredis5", kind: "ioredis", Redis: IORedis5, options: {} },
  // ioredis 6 opens every connection with HELLO 3 by default.
  { name: "ioredis6", kind: "ioredis", Redis: IORedis6, options: {} },
  { name: "ioredis6 resp2", kind: "ioredis", Redis: IORedis6, options: { protocol: 2 } },
  // node-redis 5 speaks RESP2 unless told otherwise.
  { name: "node-redis5", kind: "node-redis", options: {} },
  { name: "node-redis5 resp3", kind: "node-redis", options: { RESP: 3 } },
];

// Opens an ioredis client on the proxy and waits for 'ready' (which, with
// the default enableReadyCheck, follows the handshake and an INFO).
async function ioredis(ctx, v, extra = {}) {
  const c = new v.Redis(PROXY_URL, { ...v.options, ...extra });
  const errors = [];
  c.on("error", (err) => errors.push(err));
  ctx.defer(() => c.disconnect());
  if (c.status !== "ready") {
    await new Promise((resolve, reject) => {
      c.once("ready", resolve);
      c.once("error", reject);
      c.once("end", () => reject(new Error("connection ended before ready")));
    });
  }
  return c;
}

// Opens a node-redis client on the proxy; connect() resolves once the
// handshake (HELLO 3 with RESP: 3, CLIENT SETINFO, ...) is done.
async function nodeRedis(ctx, v, extra = {}) {
  const c = createClient({
    url: PROXY_URL,
    // Do not reconnect forever behind a test's back.
    socket: { reconnectStrategy: false, connectTimeout: 5000 },
    ...v.options,
    ...extra,
  });
  c.on("error", () => {});
  ctx.defer(() => {
    if (c.isOpen) c.destroy();
  });
  await c.connect();
  return c;
}

function connect(ctx, v, extra) {
  return v.kind === "ioredis" ? ioredis(ctx, v, extra) : nodeRedis(ctx, v, extra);
}

// PUBSUB NUMSUB replies as [ch, n, ...] (or a map in RESP3 mappings);
// returns the count for ch.
function numsubCount(reply, ch) {
  if (reply instanceof Map) return Number(reply.get(ch));
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) {
      if (String(reply[i]) === ch) return Number(reply[i + 1]);
    }
    return NaN;
  }
  if (reply && typeof reply === "object") return Number(reply[ch]);
  return NaN;
}

// Binary value with every byte value, CR LF and a NUL in it.
function binaryValue() {
  const b = Buffer.alloc(256 + 8);
  for (let i = 0; i < 256; i++) b[i] = i;
  Buffer.from("\r\n\0$3\r\n").copy(b, 256);
  return b;
}

// The FLUSHALL checks rely on the proxy refusing it; never send one to a
// redis-server directly (as when ROOMPROXY_URL is pointed at Redis itself to
// check the tests).
function refuseFlushallWithoutProxy() {
  if (new URL(PROXY_URL).host === new URL(DIRECT_URL).host) {
    throw new Error("ROOMPROXY_URL is REDIS_DIRECT_URL: not sending FLUSHALL to redis-server");
  }
}

// Awaits a transaction's exec(). If it fails, the commands queued in it must
// not have run either: clients pipeline MULTI, the commands and EXEC in one
// write, so a refused MULTI must not let the commands through on their own.
async function noSideEffects(ctx, key, execPromise) {
  try {
    return await execPromise;
  } catch (err) {
    const d = await direct(ctx);
    const v = await d.get(key);
    if (v !== null) {
      err.message += ` -- and yet the commands queued in the failed transaction ran (${key} = ${JSON.stringify(v)} on redis-server)`;
    }
    throw err;
  }
}

async function expectReject(promise, what) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error(`${what}: expected an error reply, got success`);
}

// ---------------------------------------------------------------- ioredis tests

function ioredisTests(v) {
  test(`${v.name}: connect, ready, basic commands`, async (ctx) => {
    const c = await ioredis(ctx, v);
    assert.equal(c.status, "ready");
    assert.match(await c.info("server"), /redis_version:/);
    assert.equal(await c.ping(), "PONG");

    const k = ctx.key("str");
    assert.equal(await c.set(k, "hello"), "OK");
    assert.equal(await c.get(k), "hello");

    const h = ctx.key("hash");
    assert.equal(await c.hset(h, { a: "1", b: "two", "c d": "" }), 3);
    assert.deepEqual(await c.hgetall(h), { a: "1", b: "two", "c d": "" });
    assert.deepEqual(await c.hgetall(ctx.key("nohash")), {});

    const n = ctx.key("n");
    assert.equal(await c.incr(n), 1);
    assert.equal(await c.incrby(n, 41), 42);

    assert.equal(await c.get(ctx.key("missing")), null);

    const bk = ctx.key("bin");
    const bin = binaryValue();
    assert.equal(await c.set(bk, bin), "OK");
    const back = await c.getBuffer(bk);
    assert.ok(Buffer.isBuffer(back), "getBuffer returned a Buffer");
    assert.ok(back.equals(bin), "binary value round-trips through the proxy");

    // Behind the proxy: the bytes redis-server holds are the ones sent.
    const d = await direct(ctx);
    assert.ok((await d.getBuffer(bk)).equals(bin), "redis-server holds the exact bytes");
    assert.equal(await d.get(k), "hello");
    await c.del(k, h, n, bk);
  });

  test(`${v.name}: rooms: debounced state writes, read-your-writes, lifecycle`, async (ctx) => {
    const c = await ioredis(ctx, v);
    const r = await ioredis(ctx, v); // another connection of the same proxy
    const room = `room:e2e${randomBytes(4).toString("hex")}`;
    const doc = (status, seq) => JSON.stringify({ status, seq });
    assert.equal(await c.set(room, doc("active", 0)), "OK"); // creates the room: stored first
    for (let i = 1; i <= 50; i++) {
      assert.equal(await c.set(room, doc("active", i)), "OK"); // debounced
      assert.equal(JSON.parse(await r.get(room)).seq, i, "the other connection reads the last write");
    }
    const players = `${room}:players`;
    assert.equal(await c.hset(players, { p1: "1" }), 1);
    assert.equal(await c.hset(players, { p1: "2", p2: "3" }), 1, "HSET counts new fields exactly while debounced");
    assert.equal(await r.hget(players, "p1"), "2");
    assert.deepEqual(await r.hgetall(players), { p1: "2", p2: "3" });
    const p = c.pipeline();
    p.set(room, doc("active", 51));
    p.get(room);
    p.incr(`${room}:n`);
    p.get(room);
    const res = await p.exec();
    assert.deepEqual(res.map(([err, val]) => err ?? val), ["OK", doc("active", 51), 1, doc("active", 51)]);
    const d = await direct(ctx);
    await waitFor(async () => (await d.get(room)) === doc("active", 51), 5000, "the debounced write to reach redis-server");
    assert.ok((await d.ttl(room)) > 3500, "the room's keys carry the active TTL");
    assert.equal(await c.set(room, doc("completed", 52)), "OK"); // stored, then the room leaves Redis
    assert.equal(await d.exists(room, players, `${room}:n`), 0);
    // DEBOUNCE_WINDOW_MS=0 (make test-e2e's third run): every write goes
    // through at once, and the same client-visible behaviour holds.
    const info = await c.info("debounce");
    if (/debounce_window_ms:0\r/.test(info)) {
      assert.match(info, /debounce_coalesced_writes:0\r/);
    } else {
      assert.match(info, /debounce_coalesced_writes:[1-9]/);
    }
  });

  test(`${v.name}: pipeline of 100 mixed commands`, async (ctx) => {
    const c = await ioredis(ctx, v);
    const p = c.pipeline();
    const expected = [];
    let counter = 0;
    let listLen = 0;
    for (let i = 0; i < 100; i++) {
      switch (i % 5) {
        case 0:
          p.set(ctx.key(`s${i}`), `v${i}`);
          expected.push("OK");
          break;
        case 1:
          p.get(ctx.key(`s${i - 1}`));
          expected.push(`v${i - 1}`);
          break;
        case 2:
          p.incr(ctx.key("counter"));
          expected.push(++counter);
          break;
        case 3:
          p.rpush(ctx.key("list"), String(i));
          expected.push(++listLen);
          break;
        case 4:
          p.hset(ctx.key("hash"), `f${i}`, String(i));
          expected.push(1);
          break;
      }
    }
    const results = await p.exec();
    assert.equal(results.length, 100);
    results.forEach(([err], i) => assert.equal(err, null, `command ${i} failed: ${err}`));
    assert.deepEqual(results.map(([, r]) => r), expected);
    const d = await direct(ctx);
    assert.deepEqual(
      await d.lrange(ctx.key("list"), 0, -1),
      Array.from({ length: 20 }, (_, j) => String(j * 5 + 3)),
    );
    await c.del(ctx.key("counter"), ctx.key("list"), ctx.key("hash"),
      ...Array.from({ length: 20 }, (_, j) => ctx.key(`s${j * 5}`)));
  });

  test(`${v.name}: MULTI/EXEC and WATCH abort`, async (ctx) => {
    const c = await ioredis(ctx, v);
    const other = await ioredis(ctx, v);
    const k = ctx.key("tx");
    const res = await noSideEffects(ctx, k, c.multi().set(k, "1").incr(k).get(k).exec());
    assert.deepEqual(res, [[null, "OK"], [null, 2], [null, "2"]]);

    const w = ctx.key("watched");
    await c.set(w, "before");
    assert.equal(await c.watch(w), "OK");
    await other.set(w, "changed");
    const aborted = await c.multi().set(w, "from-tx").exec();
    assert.equal(aborted, null, "EXEC after a watched key changed returns null");
    assert.equal(await c.get(w), "changed");

    // A WATCH that is not disturbed lets EXEC through.
    await c.watch(w);
    assert.deepEqual(await c.multi().set(w, "from-tx").exec(), [[null, "OK"]]);
    assert.equal(await other.get(w), "from-tx");
    await c.del(k, w);
  });

  test(`${v.name}: scripts (defineCommand, SCRIPT LOAD, EVALSHA)`, async (ctx) => {
    const c = await ioredis(ctx, v);
    // A script body unique to this run, so the first EVALSHA gets NOSCRIPT
    // and ioredis falls back to EVAL.
    const lua = `-- ${ctx.prefix}\nreturn {redis.call("INCRBY", KEYS[1], ARGV[1]), ARGV[2]}`;
    c.defineCommand("e2eIncrTag", { numberOfKeys: 1, lua });
    const k = ctx.key("n");
    assert.deepEqual(await c.e2eIncrTag(k, 5, "tag"), [5, "tag"]);
    assert.deepEqual(await c.e2eIncrTag(k, 2, "again"), [7, "again"]);

    const lua2 = `-- ${ctx.prefix} 2\nreturn redis.call("GET", KEYS[1])`;
    const sha = await c.script("LOAD", lua2);
    assert.match(sha, /^[0-9a-f]{40}$/);
    assert.deepEqual(await c.script("EXISTS", sha, "0".repeat(40)), [1, 0]);
    assert.equal(await c.evalsha(sha, 1, k), "7");
    assert.equal(await c.eval("return ARGV[1] .. KEYS[1]", 1, "k", "v"), "vk");
    const err = await expectReject(c.evalsha("f".repeat(40), 0), "EVALSHA of an unknown sha");
    assert.match(err.message, /^NOSCRIPT/);
    await c.del(k);
  });

  test(`${v.name}: pub/sub (SUBSCRIBE, PSUBSCRIBE, binary payloads, NUMSUB)`, async (ctx) => {
    const sub = await ioredis(ctx, v);
    const pub = await ioredis(ctx, v);
    const ch = ctx.key("ch");
    const pattern = ctx.key("p:*");
    const pch = ctx.key("p:room1");
    const messages = [];
    const pmessages = [];
    sub.on("messageBuffer", (channel, message) => messages.push([channel.toString(), message]));
    sub.on("pmessageBuffer", (pat, channel, message) =>
      pmessages.push([pat.toString(), channel.toString(), message]));

    assert.equal(await sub.subscribe(ch), 1);
    assert.equal(await sub.psubscribe(pattern), 2);
    assert.equal(numsubCount(await pub.pubsub("NUMSUB", ch), ch), 1, "PUBSUB NUMSUB counts the subscriber");

    const bin = binaryValue();
    assert.equal(await pub.publish(ch, "hello text"), 1);
    assert.equal(await pub.publish(ch, bin), 1);
    assert.equal(await pub.publish(pch, "to pattern"), 1);
    await waitFor(() => messages.length >= 2 && pmessages.length >= 1, 3000, "messages");
    assert.equal(messages[0][0], ch);
    assert.equal(messages[0][1].toString(), "hello text");
    assert.equal(messages[1][0], ch);
    assert.ok(messages[1][1].equals(bin), "binary payload arrives unchanged");
    assert.deepEqual(pmessages.map(([p, c, m]) => [p, c, m.toString()]), [[pattern, pch, "to pattern"]]);

    assert.equal(await sub.unsubscribe(ch), 1); // 1 subscription (the pattern) left
    assert.equal(await sub.punsubscribe(pattern), 0);
    await waitFor(async () => numsubCount(await pub.pubsub("NUMSUB", ch), ch) === 0, 2000, "NUMSUB 0 after UNSUBSCRIBE");
    assert.equal(await pub.publish(ch, "nobody"), 0);
    // Out of subscriber mode, the connection answers ordinary commands again.
    assert.equal(await sub.ping(), "PONG");
  });

  test(`${v.name}: BLPOP wakes up on LPUSH from another client`, async (ctx) => {
    const blocker = await ioredis(ctx, v);
    const pusher = await ioredis(ctx, v);
    const k = ctx.key("queue");
    const t0 = Date.now();
    const popped = blocker.blpop(k, 5);
    popped.catch(() => {}); // rejections are seen by the await below
    await sleep(200);
    assert.equal(await pusher.lpush(k, "job-1"), 1);
    assert.deepEqual(await popped, [k, "job-1"]);
    const ms = Date.now() - t0;
    assert.ok(ms < 4000, `BLPOP returned after ${ms} ms, expected it to wake on LPUSH`);
    // Timeout path: nothing pushed, BLPOP 1 returns null.
    assert.equal(await blocker.blpop(ctx.key("empty"), 1), null);
    assert.equal(await blocker.ping(), "PONG");
  });

  test(`${v.name}: error replies (unknown command, FLUSHALL)`, async (ctx) => {
    const c = await ioredis(ctx, v);
    const keep = ctx.key("survivor");
    await c.set(keep, "still here");

    const unknown = await expectReject(c.call("E2ENOSUCHCMD", "arg"), "unknown command");
    assert.match(unknown.message, /^ERR unknown command/);
    assert.equal(await c.ping(), "PONG");
    assert.equal(await c.get(keep), "still here");

    refuseFlushallWithoutProxy();
    const flush = await expectReject(c.flushall(), "FLUSHALL");
    assert.match(flush.message, /^NOPERM/);
    assert.equal(await c.get(keep), "still here");
    const d = await direct(ctx);
    assert.equal(await d.get(keep), "still here", "FLUSHALL never reached redis-server");

    // An error inside a pipeline fails only its own command.
    const res = await c.pipeline().set(keep, "v2").call("E2ENOSUCHCMD").get(keep).exec();
    assert.equal(res[0][1], "OK");
    assert.match(String(res[1][0]?.message), /^ERR unknown command/);
    assert.equal(res[2][1], "v2");
    await c.del(keep);
  });
}

// ---------------------------------------------------------------- node-redis tests

function nodeRedisTests(v) {
  test(`${v.name}: connect, ready, basic commands`, async (ctx) => {
    const c = await nodeRedis(ctx, v);
    assert.ok(c.isReady, "client is ready");
    assert.equal(await c.ping(), "PONG");

    const k = ctx.key("str");
    assert.equal(await c.set(k, "hello"), "OK");
    assert.equal(await c.get(k), "hello");

    const h = ctx.key("hash");
    assert.equal(await c.hSet(h, { a: "1", b: "two", "c d": "" }), 3);
    // RESP3 maps come back as null-prototype objects: compare entries.
    assert.deepEqual({ ...(await c.hGetAll(h)) }, { a: "1", b: "two", "c d": "" });
    assert.deepEqual({ ...(await c.hGetAll(ctx.key("nohash"))) }, {});

    const n = ctx.key("n");
    assert.equal(await c.incr(n), 1);
    assert.equal(await c.incrBy(n, 41), 42);

    assert.equal(await c.get(ctx.key("missing")), null);

    const bk = ctx.key("bin");
    const bin = binaryValue();
    assert.equal(await c.set(bk, bin), "OK");
    const back = await c.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(bk);
    assert.ok(Buffer.isBuffer(back), "GET with Buffer type mapping returned a Buffer");
    assert.ok(back.equals(bin), "binary value round-trips through the proxy");

    const d = await direct(ctx);
    assert.ok((await d.getBuffer(bk)).equals(bin), "redis-server holds the exact bytes");
    assert.equal(await d.get(k), "hello");
    await c.del([k, h, n, bk]);
  });

  test(`${v.name}: pipeline of 100 mixed commands`, async (ctx) => {
    const c = await nodeRedis(ctx, v);
    const build = (tag, add) => {
      const expected = [];
      let counter = 0;
      let listLen = 0;
      for (let i = 0; i < 100; i++) {
        switch (i % 5) {
          case 0:
            add("set", ctx.key(`${tag}s${i}`), `v${i}`);
            expected.push("OK");
            break;
          case 1:
            add("get", ctx.key(`${tag}s${i - 1}`));
            expected.push(`v${i - 1}`);
            break;
          case 2:
            add("incr", ctx.key(`${tag}counter`));
            expected.push(++counter);
            break;
          case 3:
            add("rPush", ctx.key(`${tag}list`), String(i));
            expected.push(++listLen);
            break;
          case 4:
            add("hSet", ctx.key(`${tag}hash`), `f${i}`, String(i));
            expected.push(1);
            break;
        }
      }
      return expected;
    };

    // 1. multi()...execAsPipeline(): a batch written at once, no MULTI.
    const m = c.multi();
    const expected1 = build("a", (cmd, ...args) => m[cmd](...args));
    assert.deepEqual(await m.execAsPipeline(), expected1);

    // 2. Promise.all of plain commands: node-redis auto-pipelines them.
    const promises = [];
    const expected2 = build("b", (cmd, ...args) => promises.push(c[cmd](...args)));
    assert.deepEqual(await Promise.all(promises), expected2);

    const d = await direct(ctx);
    const list = Array.from({ length: 20 }, (_, j) => String(j * 5 + 3));
    assert.deepEqual(await d.lrange(ctx.key("alist"), 0, -1), list);
    assert.deepEqual(await d.lrange(ctx.key("blist"), 0, -1), list);
    const keys = [];
    for (const tag of ["a", "b"]) {
      keys.push(ctx.key(`${tag}counter`), ctx.key(`${tag}list`), ctx.key(`${tag}hash`));
      for (let j = 0; j < 20; j++) keys.push(ctx.key(`${tag}s${j * 5}`));
    }
    await c.del(keys);
  });

  test(`${v.name}: MULTI/EXEC and WATCH abort`, async (ctx) => {
    const c = await nodeRedis(ctx, v);
    const other = await nodeRedis(ctx, v);
    const k = ctx.key("tx");
    const res = await noSideEffects(ctx, k, c.multi().set(k, "1").incr(k).get(k).exec());
    assert.deepEqual(res, ["OK", 2, "2"]);

    const w = ctx.key("watched");
    await c.set(w, "before");
    assert.equal(await c.watch(w), "OK");
    await other.set(w, "changed");
    // EXEC answers null; node-redis turns that into a WatchError.
    let aborted;
    try {
      aborted = await c.multi().set(w, "from-tx").exec();
    } catch (err) {
      if (!(err instanceof WatchError)) throw err;
      aborted = null;
    }
    assert.equal(aborted, null, "EXEC after a watched key changed is aborted");
    assert.equal(await c.get(w), "changed");

    await c.watch(w);
    assert.deepEqual(await c.multi().set(w, "from-tx").exec(), ["OK"]);
    assert.equal(await other.get(w), "from-tx");
    await c.del([k, w]);
  });

  test(`${v.name}: scripts (defineScript, SCRIPT LOAD, EVALSHA)`, async (ctx) => {
    // A script body unique to this run, so the first EVALSHA gets NOSCRIPT
    // and node-redis falls back to EVAL.
    const incrTag = defineScript({
      SCRIPT: `-- ${ctx.prefix}\nreturn {redis.call("INCRBY", KEYS[1], ARGV[1]), ARGV[2]}`,
      NUMBER_OF_KEYS: 1,
      parseCommand(parser, key, by, tag) {
        parser.pushKey(key);
        parser.push(String(by), tag);
      },
      transformReply: undefined,
    });
    const c = await nodeRedis(ctx, v, { scripts: { incrTag } });
    const k = ctx.key("n");
    assert.deepEqual(await c.incrTag(k, 5, "tag"), [5, "tag"]);
    assert.deepEqual(await c.incrTag(k, 2, "again"), [7, "again"]);

    const lua2 = `-- ${ctx.prefix} 2\nreturn redis.call("GET", KEYS[1])`;
    const sha = await c.scriptLoad(lua2);
    assert.match(sha, /^[0-9a-f]{40}$/);
    assert.deepEqual(await c.scriptExists([sha, "0".repeat(40)]), [1, 0]);
    assert.equal(await c.evalSha(sha, { keys: [k] }), "7");
    assert.equal(await c.sendCommand(["EVALSHA", sha, "1", k]), "7");
    assert.equal(await c.sendCommand(["EVAL", "return ARGV[1] .. KEYS[1]", "1", "k", "v"]), "vk");
    const err = await expectReject(c.evalSha("f".repeat(40)), "EVALSHA of an unknown sha");
    assert.match(err.message, /^NOSCRIPT/);
    await c.del(k);
  });

  test(`${v.name}: pub/sub (SUBSCRIBE, PSUBSCRIBE, binary payloads, NUMSUB)`, async (ctx) => {
    const pub = await nodeRedis(ctx, v);
    const sub = pub.duplicate();
    sub.on("error", () => {});
    ctx.defer(() => {
      if (sub.isOpen) sub.destroy();
    });
    await sub.connect();
    const ch = ctx.key("ch");
    const pattern = ctx.key("p:*");
    const pch = ctx.key("p:room1");
    const messages = [];
    const pmessages = [];
    // bufferMode true: listeners get Buffers.
    await sub.subscribe(ch, (message, channel) => messages.push([channel.toString(), message]), true);
    await sub.pSubscribe(pattern, (message, channel) => pmessages.push([channel.toString(), message]), true);
    assert.equal(numsubCount(await pub.sendCommand(["PUBSUB", "NUMSUB", ch]), ch), 1,
      "PUBSUB NUMSUB counts the subscriber");

    const bin = binaryValue();
    assert.equal(await pub.publish(ch, "hello text"), 1);
    assert.equal(await pub.publish(ch, bin), 1);
    assert.equal(await pub.publish(pch, "to pattern"), 1);
    await waitFor(() => messages.length >= 2 && pmessages.length >= 1, 3000, "messages");
    assert.equal(messages[0][0], ch);
    assert.ok(Buffer.isBuffer(messages[0][1]));
    assert.equal(messages[0][1].toString(), "hello text");
    assert.ok(messages[1][1].equals(bin), "binary payload arrives unchanged");
    assert.deepEqual(pmessages.map(([c, m]) => [c, m.toString()]), [[pch, "to pattern"]]);

    await sub.unsubscribe(ch);
    await sub.pUnsubscribe(pattern);
    await waitFor(async () => numsubCount(await pub.sendCommand(["PUBSUB", "NUMSUB", ch]), ch) === 0,
      2000, "NUMSUB 0 after UNSUBSCRIBE");
    assert.equal(await pub.publish(ch, "nobody"), 0);
    // (node-redis 5 on RESP2 answers this PING with a Buffer, even direct to Redis.)
    assert.equal(String(await sub.ping()), "PONG");
  });

  test(`${v.name}: BLPOP wakes up on LPUSH from another client`, async (ctx) => {
    const blocker = await nodeRedis(ctx, v);
    const pusher = await nodeRedis(ctx, v);
    const k = ctx.key("queue");
    const t0 = Date.now();
    const popped = blocker.blPop(k, 5);
    popped.catch(() => {}); // rejections are seen by the await below
    await sleep(200);
    assert.equal(await pusher.lPush(k, "job-1"), 1);
    assert.deepEqual({ ...(await popped) }, { key: k, element: "job-1" });
    const ms = Date.now() - t0;
    assert.ok(ms < 4000, `BLPOP returned after ${ms} ms, expected it to wake on LPUSH`);
    assert.equal(await blocker.blPop(ctx.key("empty"), 1), null);
    assert.equal(await blocker.ping(), "PONG");
  });

  test(`${v.name}: error replies (unknown command, FLUSHALL)`, async (ctx) => {
    const c = await nodeRedis(ctx, v);
    const keep = ctx.key("survivor");
    await c.set(keep, "still here");

    const unknown = await expectReject(c.sendCommand(["E2ENOSUCHCMD", "arg"]), "unknown command");
    assert.match(unknown.message, /^ERR unknown command/);
    assert.equal(await c.ping(), "PONG");
    assert.equal(await c.get(keep), "still here");

    refuseFlushallWithoutProxy();
    const flush = await expectReject(c.flushAll(), "FLUSHALL");
    assert.match(flush.message, /^NOPERM/);
    assert.equal(await c.get(keep), "still here");
    const d = await direct(ctx);
    assert.equal(await d.get(keep), "still here", "FLUSHALL never reached redis-server");
    await c.del(keep);
  });
}

for (const v of variants) {
  if (v.kind === "ioredis") ioredisTests(v);
  else nodeRedisTests(v);
}

// ---------------------------------------------------------------- socket.io

test("socket.io: redis-adapter broadcast across servers and fetchSockets", async (ctx) => {
  const adapterKey = ctx.key("sio"); // the adapter's channel prefix
  const redisClients = [];
  const newRedis = async () => {
    const c = new IORedis5(PROXY_URL);
    c.on("error", () => {});
    ctx.defer(() => c.disconnect());
    if (c.status !== "ready") await once(c, "ready");
    redisClients.push(c);
    return c;
  };

  const startServer = async () => {
    const pub = await newRedis();
    const sub = await newRedis();
    const http = createServer();
    const io = new SocketIOServer(http, {
      adapter: createAdapter(pub, sub, { key: adapterKey, requestsTimeout: 5000 }),
    });
    ctx.defer(() => new Promise((resolve) => io.close(() => resolve())));
    http.listen(0, "127.0.0.1");
    await once(http, "listening");
    return { io, pub, port: http.address().port };
  };

  const A = await startServer();
  const B = await startServer();

  // Both adapters must have their subscriptions in place before B
  // broadcasts; each server subscribes to its request channel.
  // fetchSockets waits for NUMSUB - 1 answers, so the count must be exact.
  const requestChannel = `${adapterKey}-request#/#`;
  let numsub;
  await waitFor(
    async () => (numsub = numsubCount(await A.pub.pubsub("NUMSUB", requestChannel), requestChannel)) === 2,
    3000,
    `both servers subscribed to ${requestChannel} (PUBSUB NUMSUB = 2)`,
  ).catch((err) => {
    throw new Error(`${err.message}; last NUMSUB = ${numsub}`);
  });

  A.io.on("connection", (socket) => {
    socket.join("r1");
    socket.emit("joined");
  });
  const client = socketIOClient(`http://127.0.0.1:${A.port}`, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
  });
  ctx.defer(() => client.disconnect());
  const received = new Promise((resolve) => client.on("hello", resolve));
  await new Promise((resolve, reject) => {
    client.once("joined", resolve);
    client.once("connect_error", reject);
  });

  const payload = { text: "hi from B", n: 42, nested: { ok: true }, bin: Buffer.from([0, 1, 2, 254, 255]) };
  B.io.to("r1").emit("hello", payload);
  const got = await withTimeout(received, 3000, "broadcast from server B to a client on server A");
  assert.equal(got.text, payload.text);
  assert.equal(got.n, 42);
  assert.deepEqual(got.nested, { ok: true });
  assert.ok(Buffer.from(got.bin).equals(payload.bin), "binary part of the payload arrives unchanged");

  const t0 = Date.now();
  const sockets = await B.io.in("r1").fetchSockets();
  const ms = Date.now() - t0;
  assert.equal(sockets.length, 1, "fetchSockets from B finds the socket on A");
  assert.ok(sockets[0].rooms.has("r1"));
  assert.ok(ms < 2000, `fetchSockets took ${ms} ms (requestsTimeout 5000): a server's reply was missed`);
});

// ---------------------------------------------------------------- secure

// With E2E_SECURE=1, run.sh starts roomproxy with a TLS listener and a users
// file, and ROOMPROXY_URL is rediss://game:...@localhost:port: every client
// variant connects over TLS as user "game" (~e2e:* ~room:* &e2e:*, no
// @dangerous). Registered only then; run.sh passes the filter "secure".
if (process.env.E2E_CA) {
  const ca = readFileSync(process.env.E2E_CA);
  for (const v of variants) {
    test(`secure: ${v.name}: TLS and an ACL user`, async (ctx) => {
      const extra = v.kind === "ioredis"
        ? { tls: { ca } }
        : { socket: { tls: true, ca: [ca], reconnectStrategy: false, connectTimeout: 5000 } };
      const c = await connect(ctx, v, extra);
      const send = (...args) => (v.kind === "ioredis" ? c.call(...args) : c.sendCommand(args));
      const k = ctx.key("k");
      assert.equal(String(await send("SET", k, "v")), "OK");
      assert.equal(String(await send("GET", k)), "v");
      assert.match(String(await send("CLIENT", "INFO")), / user=game /);
      let err = await expectReject(send("GET", "other:key"), "GET of a key outside ~e2e:* ~room:*");
      assert.match(String(err.message), /^NOPERM this user has no permissions to access one of the keys/);
      err = await expectReject(send("PUBLISH", "news", "m"), "PUBLISH outside &e2e:*");
      assert.match(String(err.message), /^NOPERM this user has no permissions to access one of the channels/);
      err = await expectReject(send("SORT", k), "SORT (@dangerous)");
      assert.match(String(err.message), /^NOPERM this user has no permissions to run the 'sort' command/);
      assert.equal(Number(await send("PUBLISH", ctx.key("ch"), "m")), 0);
    });
  }
}

// ---------------------------------------------------------------- go

await main();
