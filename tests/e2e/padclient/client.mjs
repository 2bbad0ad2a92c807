// One co-worker on a pad: connects through the proxy (TLS checked against
// NODE_EXTRA_CA_CERTS, the site's CA), adds a paragraph, waits until the pad shows every
// expected line (the other co-workers' too), prints the pad's lines as JSON and leaves.
// Input on stdin: {url, address, token, pad, write, expect, seconds}.
import { HocuspocusProvider } from "@hocuspocus/provider";
import { WebSocket } from "ws";
import * as Y from "yjs";

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => { data += chunk; });
  process.stdin.on("end", () => resolve(data));
}));

// The site's names resolve to the lab host, as a LAN's DNS would.
const lookup = (host, options, callback) => (options && options.all
  ? callback(null, [{ address: input.address, family: 4 }])
  : callback(null, input.address, 4));
class LabSocket extends WebSocket {
  constructor(url, protocols) { super(url, protocols, { lookup }); }
}

const lines = (doc) => doc.getXmlFragment("default").toArray()
  .map((block) => block.toArray().map((t) => t.toString()).join(""));
const fail = (message) => { console.error(message); process.exit(1); };
setTimeout(() => fail(`timed out; pad shows ${JSON.stringify(lines(provider.document))}`),
  input.seconds * 1000);

const provider = new HocuspocusProvider({
  url: input.url,
  WebSocketPolyfill: LabSocket,
  name: input.pad,
  token: input.token,
  onAuthenticationFailed: ({ reason }) => fail(`authentication failed: ${reason}`),
});
await new Promise((resolve) => provider.on("synced", resolve));
if (input.write) {
  provider.document.transact(() => {
    const paragraph = new Y.XmlElement("paragraph");
    paragraph.insert(0, [new Y.XmlText(input.write)]);
    const fragment = provider.document.getXmlFragment("default");
    fragment.insert(fragment.length, [paragraph]);
  });
}
while (!input.expect.every((line) => lines(provider.document).includes(line))) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
// leave once the server has every change of ours
while (provider.hasUnsyncedChanges) await new Promise((resolve) => setTimeout(resolve, 100));
console.log(JSON.stringify({ lines: lines(provider.document) }));
provider.destroy();
process.exit(0);
