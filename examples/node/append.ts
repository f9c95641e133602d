// Takes the dlm lock from Node, appends a line to a file, releases the lock
// (which commits the line), and prints the end of the file.
//
//   npx tsx examples/node/append.ts [file] [text]
//
// DLM_SERVERS lists the servers (default 127.0.0.1:7070).
import { Client, LockExpiredError, parseEndpoints } from "@dlm/client";
import { nodeTransports } from "@dlm/client/node";

const file = process.argv[2] ?? "file_0";
const text = process.argv[3] ?? `hello from node, pid ${process.pid}`;
const servers = parseEndpoints(process.env.DLM_SERVERS ?? "127.0.0.1:7070");

const client = await Client.open(servers, { name: `node example ${process.pid}`, transports: nodeTransports() });
try {
  const lock = await client.acquire({ timeoutMs: 60_000 });
  console.log(`holding the lock as session ${client.clientId}, fencing token ${lock.token}`);
  lock.addEventListener("lost", () => console.error("lost the lock: the appends will be discarded"));
  try {
    await lock.append(file, `${text}\n`);
    await lock.release();
  } catch (err) {
    if (err instanceof LockExpiredError) {
      console.error(`the lock expired before the release: nothing was written (${err.message})`);
      process.exitCode = 1;
    } else {
      await lock.abort();
      throw err;
    }
  }
  const tail = await client.readFileRange(file, -200);
  console.log(`${file} (${tail.size} bytes) ends with:\n${new TextDecoder().decode(tail.data)}`);
} finally {
  await client.close();
}
