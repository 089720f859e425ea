// The chat page grpc-chat serves at /: sign in with a name (or a token), then chat in the rooms
// the address names, over gRPC-Web to chat.ChatService.

import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ChatService } from "../gen/chat_pb.js";
import { ChatApp, logo } from "./app.js";
import { h, setChildren } from "./dom.js";
import {
  MAX_USER_CHARS,
  grpcWebBaseUrl,
  nameProblem,
  roomProblem,
  roomsInAddress,
  saveIdentity,
  savedIdentity,
  tokenUser,
  userClaim,
  type Identity,
} from "./settings.js";

const DEFAULT_ROOM = "general";
const root = document.body;
let app: ChatApp | null = null;
let token = "";

/** Presents the token, when there is one, on every call. */
const bearer: Interceptor = (next) => (request) => {
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};
const client = createClient(
  ChatService,
  createGrpcWebTransport({ baseUrl: grpcWebBaseUrl(), useBinaryFormat: true, interceptors: [bearer] }),
);

function start(identity: Identity, rooms: string[]): void {
  token = identity.token;
  app = new ChatApp(root, client, identity, signOut);
  app.start(rooms.length ? rooms : [DEFAULT_ROOM]);
}

function signOut(): void {
  app?.stop();
  app = null;
  saveIdentity(null);
  signIn(roomsInAddress());
}

function signIn(rooms: string[], problem = ""): void {
  const name = h("input", {
    name: "name",
    autocomplete: "nickname",
    maxlength: String(MAX_USER_CHARS),
    required: !userClaim,
    autofocus: true,
    spellcheck: "false",
    value: localStorage.getItem("grpc-chat.name") ?? "",
  });
  const tokenInput = h("input", {
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
  });
  const roomInput = h("input", {
    name: "rooms",
    value: (rooms.length ? rooms : [DEFAULT_ROOM]).join(", "),
    spellcheck: "false",
    autocomplete: "off",
  });
  const error = h("p.field-error", { role: "alert" }, problem);
  const form = h(
    "form.signin",
    { "aria-labelledby": "signin-title" },
    h("div.brand.large", {}, logo(), h("span", { id: "signin-title" }, "grpc-chat")),
    h("p.lede", {}, "Real-time rooms, live in your browser."),
    h("label", {}, "Your name", name),
    userClaim
      ? h(
          "label",
          {},
          "Token",
          tokenInput,
          h("span.hint", {}, "With a token you chat as the user it names; leave it empty to join as a guest where guests may."),
        )
      : null,
    h("label", {}, "Rooms", roomInput, h("span.hint", {}, "Comma-separated; links to this page open them too.")),
    error,
    h("button.primary", { type: "submit" }, "Start chatting"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = roomInput.value
      .split(",")
      .map((room) => room.trim())
      .filter(Boolean);
    const badRoom = chosen.map(roomProblem).find((reason) => reason !== null);
    const givenToken = tokenInput.value.trim();
    const identity: Identity = givenToken
      ? { name: tokenUser(givenToken), token: givenToken }
      : { name: name.value.trim(), token: "" };
    const problem = badRoom ?? (givenToken ? null : nameProblem(identity.name));
    if (problem) {
      error.textContent = problem;
      return;
    }
    saveIdentity(identity);
    start(identity, [...new Set(chosen)]);
  });
  setChildren(root, h("div.signin-page", {}, form));
  name.focus();
}

const identity = savedIdentity();
if (identity) start(identity, roomsInAddress());
else signIn(roomsInAddress());
