// Takes the dlm lock from a web page, appends a line and releases the lock.
// The page is served from its own origin; the dlm server allows it through
// CORS (dlm serve --cors-origin http://127.0.0.1:8000), so the client calls
// it directly with fetch.
import { Client, DlmError } from "@dlm/client";

const $ = (id: string) => document.getElementById(id) as HTMLInputElement;
const out = document.getElementById("out") as HTMLPreElement;
const say = (line: string) => {
  out.textContent += `${line}\n`;
};

$("go").addEventListener("click", async () => {
  const server = $("server").value;
  const file = $("file").value;
  let client: Client | undefined;
  try {
    client = await Client.open([server], { name: "browser example", retryBudgetMs: 5000 });
    say(`session ${client.clientId} opened; waiting for the lock…`);
    await client.withLock(async (lock) => {
      say(`holding the lock, fencing token ${lock.token}`);
      await lock.append(file, `${$("text").value}\n`);
    });
    const tail = await client.readFileRange(file, -200);
    say(`released; ${file} now ends with:\n${new TextDecoder().decode(tail.data)}`);
  } catch (err) {
    say(`failed: ${err instanceof DlmError ? `${err.name}: ` : ""}${(err as Error).message}`);
  } finally {
    await client?.close();
  }
});
