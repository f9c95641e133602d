// Takes a named dlm lock from Node (shared with --shared), shows the
// fencing token as a resource server would check it, runs for a moment
// under the lock, and releases it.
//
//   npx tsx examples/node/named.ts [--shared] [--try] [name] [hold-ms]
//
// DLM_SERVERS lists the servers (default 127.0.0.1:7070). With --try it
// gives up at once when the lock is busy (exit status 2), else after 30 s.
import { AbortedError, Client, NotAvailableError, parseEndpoints, Reader } from "@dlm/client";
import { nodeTransports } from "@dlm/client/node";

const flags = new Set(process.argv.slice(2).filter((a) => a.startsWith("--")));
const [name = "jobs/nightly-report", holdMs = "200"] = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const mode = flags.has("--shared") ? "shared" : "exclusive";
const servers = parseEndpoints(process.env.DLM_SERVERS ?? "127.0.0.1:7070");

const client = await Client.open(servers, { name: `named example ${process.pid}`, transports: nodeTransports() });
// A resource server needs no session to check tokens: a Reader will do.
const checker = new Reader(servers, { transports: nodeTransports() });
try {
  const lock = flags.has("--try")
    ? await client.tryAcquire({ lock: name, mode })
    : await client.acquire({ lock: name, mode, timeoutMs: 30_000 });
  console.log(`holding ${lock.name} (${lock.mode}) with fencing token ${lock.token}`);
  const check = await checker.checkToken(lock.token, { lock: name });
  console.log(`checkToken: current=${check.current} latest=${check.latestToken}`);
  // Work under the lock stops when the lock is lost (lock.signal aborts).
  await new Promise((res) => setTimeout(res, Number(holdMs)));
  if (lock.signal.aborted) {
    console.error(`lost ${name} while working: ${String(lock.signal.reason)}`);
    process.exitCode = 1;
  } else {
    await lock.release();
    console.log(`released ${name}`);
  }
} catch (err) {
  if (err instanceof NotAvailableError || err instanceof AbortedError) {
    console.error(`${name} is busy: ${err.message}`);
    process.exitCode = 2;
  } else {
    throw err;
  }
} finally {
  checker.close();
  await client.close();
}
