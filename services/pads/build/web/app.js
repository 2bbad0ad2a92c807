// The pads page: the list of pads, or one pad edited together (Tiptap + Yjs through
// Hocuspocus). Bundled at image build time into /opt/pads/web/app.js.
import { HocuspocusProvider } from "@hocuspocus/provider";
import { Editor } from "@tiptap/core";
import Collaboration from "@tiptap/extension-collaboration";
import CollaborationCaret from "@tiptap/extension-collaboration-caret";
import StarterKit from "@tiptap/starter-kit";

const french = document.documentElement.lang === "fr";
const say = (fr, en) => (french ? fr : en);
for (const el of document.querySelectorAll("[data-fr]")) el.textContent = say(el.dataset.fr, el.dataset.en);
const status = document.getElementById("status");
const colours = ["#c0392b", "#2471a3", "#1e8449", "#b9770e", "#7d3c98", "#117a65"];

async function listPads() {
  const answer = await fetch("/api/pads");
  const { pads } = await answer.json();
  const list = document.getElementById("pads");
  list.replaceChildren(...pads.map((pad) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/p/${encodeURIComponent(pad.name)}`;
    link.textContent = pad.name;
    item.append(link, ` · ${new Date(pad.updated).toLocaleString()}`);
    return item;
  }));
  if (!pads.length) list.textContent = say("Aucun pad pour l'instant.", "No pads yet.");
}

async function openPad(name) {
  document.getElementById("list").hidden = true;
  document.getElementById("pad").hidden = false;
  document.getElementById("pad-name").textContent = name;
  document.title = `${name} · ${document.title}`;
  document.getElementById("as-text").href = `/api/pads/${encodeURIComponent(name)}/text`;
  const { token } = await (await fetch("/api/token")).json();
  const provider = new HocuspocusProvider({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    name,
    token,
  });
  provider.on("status", ({ status: s }) => {
    status.textContent = s === "connected" ? say("en ligne", "online") : say("hors ligne…", "offline…");
  });
  const me = localStorage.getItem("pads-name") || prompt(say("Votre prénom ?", "Your name?")) || "?";
  localStorage.setItem("pads-name", me);
  const editor = new Editor({
    element: document.getElementById("editor"),
    extensions: [
      StarterKit.configure({ undoRedo: false }),
      Collaboration.configure({ document: provider.document }),
      CollaborationCaret.configure({
        provider,
        user: { name: me, color: colours[Math.floor(Math.random() * colours.length)] },
      }),
    ],
  });
  for (const button of document.querySelectorAll("#toolbar button")) {
    button.addEventListener("click", () => {
      const chain = editor.chain().focus();
      const level = button.dataset.level ? { level: Number(button.dataset.level) } : undefined;
      chain[button.dataset.cmd](level).run();
    });
  }
}

document.getElementById("open").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = document.getElementById("name").value.trim();
  if (name) location.href = `/p/${encodeURIComponent(name)}`;
});

if (location.pathname.startsWith("/p/")) openPad(decodeURIComponent(location.pathname.slice(3)));
else listPads();
