// The chat view: the rooms open at once, each with its conversation, who is here and its
// connection; one composer for the room shown; unread counts in the room list and, while the
// page is hidden, in the tab title.

import type { Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ChatService, RoomListing } from "../gen/chat_pb.js";
import { h, setChildren } from "./dom.js";
import {
  Room,
  TYPING_HEARTBEAT_MS,
  TYPING_TIMEOUT_MS,
  describe,
  type ConnectionState,
  type Item,
  type Outgoing,
  type Quote,
} from "./room.js";
import {
  maxContentBytes,
  moderates,
  nameProblem,
  roomProblem,
  showRoomsInAddress,
  type Identity,
} from "./settings.js";

/** Where the other members of direct rooms are kept (localStorage: a room's name says no name). */
const PEERS_KEY = "grpc-chat.direct-peers";

/** The direct rooms' other members saved in this browser. */
function savedPeers(): Record<string, string> {
  try {
    const saved: unknown = JSON.parse(localStorage.getItem(PEERS_KEY) ?? "{}");
    if (typeof saved !== "object" || saved === null) return {};
    return Object.fromEntries(
      Object.entries(saved).filter((entry): entry is [string, string] => typeof entry[1] === "string"),
    );
  } catch {
    return {};
  }
}

/** Rooms the directory asks for at a time. */
const DIRECTORY_PAGE = 50;

/** The reactions the page offers (any other key a client sends is shown all the same). */
const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

/** Consecutive messages of one person this close together share one name line. */
const GROUPING_MS = 5 * 60_000;
/** Scrolled this close to the end, the conversation follows new messages. */
const FOLLOW_SLACK_PX = 48;
/**
 * Over plain HTTP a browser keeps at most six connections to a server, and each followed room
 * holds one: beyond five rooms sending would wait. HTTP/2 (https) has no such limit.
 */
const MAX_ROOMS = location.protocol === "https:" ? 20 : 5;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });

/** A room as shown: its conversation, members and place in the room list. */
interface Shown {
  room: Room;
  log: HTMLElement;
  outbox: HTMLElement;
  scroller: HTMLElement;
  tab: HTMLButtonElement;
  badge: HTMLElement;
  members: { user: string; sessions: number }[];
  unread: number;
  draft: string;
  /** The message the composer's next send answers, if any. */
  replyTo?: Quote;
  last: Item | null;
  pending: Map<number, HTMLElement>;
  /** Who else is typing here, until when (milliseconds since the epoch). */
  typists: Map<string, number>;
}

export class ChatApp {
  private readonly rooms = new Map<string, Shown>();
  private order: string[] = [];
  private current: Shown | null = null;
  private hiddenUnread = 0;

  private readonly roomList = h("nav.room-list", { "aria-label": "Rooms" });
  private readonly joinInput = h("input", {
    name: "room",
    placeholder: "Join a room",
    "aria-label": "Join a room",
    maxlength: "64",
    autocomplete: "off",
    spellcheck: "false",
  });
  private readonly joinError = h("p.field-error", { role: "alert" });
  private readonly directInput = h("input", {
    name: "peer",
    placeholder: "Message someone",
    "aria-label": "Message someone",
    maxlength: "32",
    autocomplete: "off",
    spellcheck: "false",
  });
  private readonly directError = h("p.field-error", { role: "alert" });
  private readonly findButton = h("button.link.find-rooms", { type: "button" }, "Find rooms");
  /** The other member of each direct room this browser opened, by room name. */
  private readonly peers: Record<string, string> = savedPeers();
  private readonly title = h("h1.room-title");
  private readonly status = h("span.status", { role: "status" });
  private readonly membersButton = h(
    "button.members-toggle",
    { type: "button", "aria-expanded": "false", "aria-controls": "members" },
  );
  private readonly membersList = h("ul.member-list");
  private readonly membersPanel = h(
    "aside.members",
    { id: "members", "aria-label": "Who is here" },
    h("h2", {}, "Here now"),
    this.membersList,
  );
  private readonly conversation = h("div.conversation-body");
  private readonly input = h("textarea", {
    rows: "1",
    "aria-label": "Message",
    enterkeyhint: "send",
    autocomplete: "off",
  });
  private readonly sendButton = h("button.send", { type: "submit" }, "Send");
  private readonly composerHint = h("p.composer-hint", { "aria-live": "polite" });
  private readonly replying = h("div.replying", { hidden: true, "aria-live": "polite" });
  private readonly typingLine = h("p.typing", { "aria-live": "polite" });
  /** When the room shown was last told this person is typing (0: it was told they stopped). */
  private typingSince = 0;
  private readonly jumpButton = h("button.jump", { type: "button", hidden: true }, "New messages ↓");
  private statusTimer: number | undefined;

  constructor(
    private readonly root: HTMLElement,
    private readonly client: Client<typeof ChatService>,
    private readonly identity: Identity,
    private readonly signOut: () => void,
  ) {}

  start(rooms: string[]): void {
    const composer = h(
      "form.composer",
      {},
      this.typingLine,
      this.replying,
      h("div.composer-row", {}, this.input, this.sendButton),
      this.composerHint,
    );
    const joinForm = h("form.join-room", {}, this.joinInput, this.joinError);
    const directForm = h("form.join-room.direct", {}, this.directInput, this.directError);
    const me = h(
      "footer.me",
      {},
      avatar(this.identity.name || "?"),
      h("span.me-name", { title: "You" }, this.identity.name || "signed in"),
      h("button.link", { type: "button", "data-action": "sign-out" }, this.identity.token ? "Sign out" : "Change name"),
    );
    setChildren(
      this.root,
      h(
        "div.app",
        {},
        h("aside.sidebar", {}, h("div.brand", {}, logo(), "grpc-chat"), this.roomList, joinForm, directForm, this.findButton, me),
        h(
          "main.conversation",
          {},
          h("header.room-header", {}, this.title, this.status, this.membersButton),
          this.conversation,
          this.jumpButton,
          composer,
        ),
        this.membersPanel,
      ),
    );

    joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = this.joinInput.value.trim();
      const problem = roomProblem(name) ?? (this.rooms.has(name) ? null : this.roomLimitProblem());
      this.joinError.textContent = problem ?? "";
      if (problem) return;
      this.joinInput.value = "";
      this.open(name);
      this.show(name);
    });
    directForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.openDirect(this.directInput.value.trim());
    });
    this.findButton.addEventListener("click", () => void this.showDirectory());
    me.querySelector("button")?.addEventListener("click", () => this.signOut());
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendDraft();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.sendDraft();
      }
    });
    this.input.addEventListener("input", () => {
      this.checkDraft();
      this.tellTyping(this.input.value.trim() !== "");
    });
    this.membersButton.addEventListener("click", () => this.toggleMembers());
    this.jumpButton.addEventListener("click", () => this.scrollToEnd(this.current));
    document.addEventListener("keydown", (event) => this.shortcut(event));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) {
        this.hiddenUnread = 0;
        if (this.current) this.markRead(this.current);
        this.updateTitle();
      }
    });
    window.addEventListener("online", () => this.rooms.forEach((shown) => shown.room.reconnectNow()));
    window.addEventListener("hashchange", () => this.followAddress());
    this.statusTimer = window.setInterval(() => {
      this.renderStatus();
      this.renderTyping();
    }, 1000);

    for (const name of rooms.slice(0, MAX_ROOMS)) this.open(name);
    this.show(rooms[0] ?? "general");
  }

  /** Leaves every room. */
  stop(): void {
    window.clearInterval(this.statusTimer);
    this.rooms.forEach((shown) => shown.room.close());
    this.rooms.clear();
  }

  private roomLimitProblem(): string | null {
    return this.rooms.size >= MAX_ROOMS
      ? `At most ${MAX_ROOMS} rooms can be open at once here; close one first.`
      : null;
  }

  private followAddress(): void {
    const wanted = decodeURIComponent(location.hash.slice(1)).split(",")[0]?.trim() ?? "";
    if (wanted && roomProblem(wanted) === null && wanted !== this.current?.room.name) {
      if (this.rooms.has(wanted) || this.roomLimitProblem() === null) {
        this.open(wanted);
        this.show(wanted);
      }
    }
  }

  /** Opens the direct room with `peer`, which the server names for the pair. */
  private async openDirect(peer: string): Promise<void> {
    const problem = peer === this.identity.name ? "That is you." : nameProblem(peer);
    this.directError.textContent = problem ?? "";
    if (problem) return;
    try {
      const { room } = await this.client.directRoom({ user: this.identity.token ? "" : this.identity.name, peer });
      const limit = this.rooms.has(room) ? null : this.roomLimitProblem();
      this.directError.textContent = limit ?? "";
      if (limit) return;
      this.peers[room] = peer;
      localStorage.setItem(PEERS_KEY, JSON.stringify(this.peers));
      this.directInput.value = "";
      this.open(room);
      this.show(room);
    } catch (error) {
      this.directError.textContent = describe(error);
    }
  }

  /** Shows the rooms this person may read, a page at a time, in place of the conversation. */
  private async showDirectory(): Promise<void> {
    const list = h("ul.directory-list", { "aria-label": "Rooms you can join" });
    const more = h("button.link.more", { type: "button", hidden: true }, "More rooms");
    const note = h("p.directory-note", { role: "status" }, "Loading…");
    const back = h("button.link", { type: "button" }, "Back to the conversation");
    back.addEventListener("click", () => {
      if (this.current) this.show(this.current.room.name);
    });
    setChildren(
      this.conversation,
      h("section.directory", {}, h("div.directory-head", {}, h("h2", {}, "Rooms you can join"), back), note, list, more),
    );
    this.title.textContent = "Find rooms";
    let pageToken = "";
    const load = async (): Promise<void> => {
      try {
        const user = this.identity.token ? "" : this.identity.name;
        const page = await this.client.listRooms({ pageSize: DIRECTORY_PAGE, pageToken, user });
        for (const room of page.rooms) list.append(this.directoryEntry(room));
        pageToken = page.nextPageToken;
        more.hidden = pageToken === "";
        note.textContent = list.childElementCount ? "" : "No rooms yet: join one by its name.";
      } catch (error) {
        note.textContent = `Could not list the rooms: ${describe(error)}`;
      }
    };
    more.addEventListener("click", () => void load());
    await load();
    back.focus();
  }

  /** One room of the directory: a button that opens it, with who is there and when it was used. */
  private directoryEntry(room: RoomListing): HTMLElement {
    const unread = room.unread > 0n ? ` · ${room.unread} unread` : "";
    const here = `${room.members} here`;
    const last = room.lastActivity
      ? `last message ${dayLabel(timestampDate(room.lastActivity))}, ${timeFormat.format(timestampDate(room.lastActivity))}`
      : "no messages yet";
    const open = h(
      "button.directory-room",
      { type: "button", "data-room": room.room },
      h("span.room-name", {}, this.label(room.room)),
      h("span.directory-meta", {}, `${here} · ${last}${unread}`),
    );
    open.addEventListener("click", () => {
      const problem = this.rooms.has(room.room) ? null : this.roomLimitProblem();
      if (problem) {
        open.append(h("span.field-error", { role: "alert" }, ` ${problem}`));
        return;
      }
      this.open(room.room);
      this.show(room.room);
    });
    return h("li", {}, open);
  }

  /** How a room is called here: `@peer` for a direct room, `#name` for the others. */
  private label(name: string): string {
    const peer = this.peers[name];
    return peer !== undefined ? `@${peer}` : name.startsWith("dm.") ? "@(direct)" : `#${name}`;
  }

  private open(name: string): void {
    if (this.rooms.has(name)) return;
    const label = this.label(name);
    const log = h("div.log", { role: "log", "aria-label": `Messages in ${label}` });
    const outbox = h("div.outbox");
    const scroller = h("div.scroller", { tabindex: "0" }, log, outbox);
    const badge = h("span.badge", { hidden: true });
    const close = h("span.close", { role: "button", "aria-label": `Leave ${label}`, title: `Leave ${label}` }, "×");
    const tab = h(
      "button.room-tab",
      { type: "button", "data-room": name },
      h("span.dot", { "aria-hidden": "true" }),
      h("span.room-name", {}, label),
      badge,
      close,
    );
    tab.addEventListener("click", (event) => {
      if (event.target === close) this.leave(name);
      else this.show(name);
    });
    tab.addEventListener("keydown", (event) => {
      if (event.key === "Delete" || event.key === "Backspace") this.leave(name);
    });
    scroller.addEventListener("scroll", () => {
      if (this.current?.scroller === scroller && nearEnd(scroller)) {
        this.jumpButton.hidden = true;
        this.markRead(this.current);
      }
    });
    const shown: Shown = {
      room: undefined as unknown as Room,
      log,
      outbox,
      scroller,
      tab,
      badge,
      members: [],
      unread: 0,
      draft: "",
      last: null,
      pending: new Map(),
      typists: new Map(),
    };
    shown.room = new Room(name, this.client, this.identity.token ? "" : this.identity.name, {
      added: (items, replayed) => this.added(shown, items, replayed),
      outgoing: (message) => this.renderOutgoing(shown, message),
      delivered: (localId) => {
        shown.pending.get(localId)?.remove();
        shown.pending.delete(localId);
      },
      connection: () => {
        // Typing heard before a reconnection may have stopped unheard.
        if (shown.room.connection.state !== "live") shown.typists.clear();
        this.renderTyping();
        this.renderStatus();
        if (shown.room.connection.state === "refused") this.refused(shown, shown.room.connection.reason);
      },
      members: (members) => {
        shown.members = members;
        if (shown === this.current) this.renderMembers();
      },
      read: (unread) => this.readElsewhere(shown, unread),
      changed: (item) => this.changed(shown, item),
      typing: (user, typing) => {
        if (typing) shown.typists.set(user, Date.now() + TYPING_TIMEOUT_MS);
        else shown.typists.delete(user);
        if (shown === this.current) this.renderTyping();
      },
    });
    this.rooms.set(name, shown);
    this.order.push(name);
    this.roomList.append(tab);
    shown.room.open();
  }

  private leave(name: string): void {
    const shown = this.rooms.get(name);
    if (!shown) return;
    shown.room.close();
    shown.tab.remove();
    this.rooms.delete(name);
    this.order = this.order.filter((room) => room !== name);
    if (this.current === shown) {
      this.current = null;
      const next = this.order[0];
      if (next) this.show(next);
      else {
        this.open("general");
        this.show("general");
      }
    } else {
      this.rememberRooms();
    }
  }

  private show(name: string): void {
    const shown = this.rooms.get(name);
    if (!shown) return;
    if (this.current) this.current.draft = this.input.value;
    this.tellTyping(false);
    this.current = shown;
    for (const other of this.rooms.values()) {
      other.tab.toggleAttribute("aria-current", other === shown);
    }
    setChildren(this.conversation, shown.scroller);
    this.input.placeholder = `Message ${this.label(name)}`;
    this.input.value = shown.draft;
    this.checkDraft();
    this.renderReplying();
    this.renderTyping();
    this.markRead(shown);
    this.renderMembers();
    this.renderStatus();
    this.scrollToEnd(shown);
    this.rememberRooms();
    this.updateTitle();
    this.input.focus();
  }

  private rememberRooms(): void {
    const first = this.current?.room.name;
    const rest = this.order.filter((room) => room !== first);
    showRoomsInAddress(first ? [first, ...rest] : rest);
  }

  private added(shown: Shown, items: Item[], replayed: boolean): void {
    const follow = nearEnd(shown.scroller);
    for (const item of items) {
      this.renderItem(shown, item);
      // Their message is what they were typing.
      if (item.kind === "chat") shown.typists.delete(item.user);
      const news = !replayed && item.kind === "chat" && item.user !== this.identity.name;
      if (news && document.hidden) this.hiddenUnread += 1;
    }
    if (shown !== this.current || document.hidden) shown.unread = shown.room.unread();
    this.renderBadge(shown);
    this.updateTitle();
    if (shown === this.current) {
      if (follow || replayed) {
        this.scrollToEnd(shown);
        this.markRead(shown);
      } else this.jumpButton.hidden = false;
    }
  }

  /** The server says how much of `shown` is unread for this person (another tab or device read
   * on, or this one did): the badge follows, unless the room is in view, where it is read. */
  private readElsewhere(shown: Shown, unread: number): void {
    if (shown === this.current && !document.hidden) return;
    shown.unread = unread;
    this.renderBadge(shown);
    this.updateTitle();
  }

  private renderItem(shown: Shown, item: Item): void {
    const date = new Date(item.time);
    const previous = shown.last;
    if (!previous || !sameDay(new Date(previous.time), date)) {
      shown.log.append(h("div.day", { role: "separator" }, dayLabel(date)));
    }
    shown.last = item;
    if (item.kind === "notice") {
      shown.log.append(h("div.notice", { role: "note" }, item.text));
      return;
    }
    if (item.kind === "join" || item.kind === "leave") {
      const verb = item.kind === "join" ? "joined" : "left";
      shown.log.append(
        h(`div.presence.${item.kind}`, {}, h("strong", {}, item.user), ` ${verb}`, " · ", timeElement(date)),
      );
      return;
    }
    const continued =
      previous?.kind === "chat" &&
      previous.user === item.user &&
      item.time - previous.time < GROUPING_MS &&
      sameDay(new Date(previous.time), date);
    shown.log.append(this.messageElement(shown, item, continued));
  }

  /** A message as shown: who and when (unless `continued` from the one before), what it
   * answers, its text (or that it was deleted, or whether edited), its reactions, and what this
   * person may do with it. */
  private messageElement(shown: Shown, item: Item, continued: boolean): HTMLElement {
    const own = item.user === this.identity.name;
    const date = new Date(item.time);
    const actions = item.deleted
      ? null
      : h(
          "div.actions",
          {},
          this.replyButton(shown, item),
          this.reactButton(shown, item),
          own ? this.editButton(shown, item) : null,
          own || moderates(this.identity.token, shown.room.name) ? this.deleteButton(shown, item) : null,
        );
    return h(
      `div.message${own ? ".own" : ""}${continued ? ".continued" : ""}${item.deleted ? ".deleted" : ""}`,
      { "data-offset": item.offset },
      continued
        ? null
        : h("div.meta", {}, avatar(item.user), h("span.author", {}, item.user), timeElement(date)),
      item.reply ? quote(item.reply) : null,
      item.deleted
        ? h("div.text.tombstone", {}, "This message was deleted.")
        : h("div.text", {}, item.text, item.version ? h("span.edited", {}, " (edited)") : null),
      item.reactions ? this.reactionsRow(shown, item) : null,
      own && !item.deleted ? h("div.state", {}, "Sent") : null,
      actions,
    );
  }

  /** Shows `item` again where it is, as it stands now (edited, deleted, reacted to). */
  private changed(shown: Shown, item: Item): void {
    const element = shown.log.querySelector<HTMLElement>(`.message[data-offset="${item.offset}"]`);
    if (!element) return;
    element.replaceWith(this.messageElement(shown, item, element.classList.contains("continued")));
  }

  /** The reactions on `item`: each key with its count, pressed where this person reacted;
   * pressing one adds or takes back this person's. */
  private reactionsRow(shown: Shown, item: Item): HTMLElement {
    const buttons = (item.reactions ?? []).map((reaction) => {
      const mine = reaction.users.includes(this.identity.name);
      const others = reaction.count - reaction.users.length;
      const who = reaction.users.join(", ") + (others > 0 ? ` and ${others} more` : "");
      const button = h(
        "button.reaction",
        { type: "button", "aria-pressed": mine ? "true" : "false", title: who, "aria-label": `${reaction.key} ${reaction.count}: ${who}` },
        `${reaction.key} ${reaction.count}`,
      );
      button.addEventListener("click", () => this.tryChange(shown.room.react(item.offset, reaction.key, mine)));
      return button;
    });
    return h("div.reactions", {}, ...buttons);
  }

  /** A button that opens a few reactions to choose from. */
  private reactButton(shown: Shown, item: Item): HTMLElement {
    const button = h("button.link.react", { type: "button", "aria-expanded": "false", "aria-label": `React to ${item.user}` }, "React");
    const palette = h("span.palette", { hidden: true });
    for (const key of REACTIONS) {
      const choice = h("button.link", { type: "button", "aria-label": `React with ${key}` }, key);
      choice.addEventListener("click", () => {
        palette.hidden = true;
        button.setAttribute("aria-expanded", "false");
        const mine = item.reactions?.some((held) => held.key === key && held.users.includes(this.identity.name));
        this.tryChange(shown.room.react(item.offset, key, mine === true));
      });
      palette.append(choice);
    }
    button.addEventListener("click", () => {
      palette.hidden = !palette.hidden;
      button.setAttribute("aria-expanded", String(!palette.hidden));
      if (!palette.hidden) palette.querySelector("button")?.focus();
    });
    return h("span", {}, button, palette);
  }

  /** A button that turns `item`'s text into a field to edit it in (Enter saves, Escape gives
   * up). */
  private editButton(shown: Shown, item: Item): HTMLButtonElement {
    const button = h("button.link.edit", { type: "button", "aria-label": "Edit your message" }, "Edit");
    button.addEventListener("click", () => {
      const element = button.closest(".message");
      const text = element?.querySelector(".text");
      if (!element || !text) return;
      const field = h("textarea.edit-field", { rows: "2", "aria-label": "Edit message" });
      field.value = item.text;
      const cancel = (): void => this.changed(shown, item);
      const save = (): void => {
        const edited = field.value.trim();
        if (edited === "" || edited === item.text) return cancel();
        this.tryChange(shown.room.edit(item.offset, edited));
      };
      field.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey) {
          event.preventDefault();
          save();
        } else if (event.key === "Escape") cancel();
      });
      const saveButton = h("button.link", { type: "button" }, "Save");
      saveButton.addEventListener("click", save);
      const cancelButton = h("button.link", { type: "button" }, "Cancel");
      cancelButton.addEventListener("click", cancel);
      text.replaceWith(h("div.editing", {}, field, saveButton, cancelButton));
      field.focus();
    });
    return button;
  }

  /** A button that deletes `item`, once confirmed. */
  private deleteButton(shown: Shown, item: Item): HTMLButtonElement {
    const button = h("button.link.delete", { type: "button", "aria-label": `Delete ${item.user}'s message` }, "Delete");
    button.addEventListener("click", () => {
      if (window.confirm("Delete this message for everyone?")) this.tryChange(shown.room.delete(item.offset));
    });
    return button;
  }

  /** Says under the composer why a change was refused, if it was. */
  private tryChange(change: Promise<string | null>): void {
    void change.then((refused) => {
      if (refused !== null) this.composerHint.textContent = `Not changed: ${refused}`;
    });
  }

  /** A button that makes the next message a reply to `item`. */
  private replyButton(shown: Shown, item: Item): HTMLButtonElement {
    const button = h("button.link.reply", { type: "button", "aria-label": `Reply to ${item.user}` }, "Reply");
    button.addEventListener("click", () => {
      shown.replyTo = { offset: item.offset, user: item.user, preview: preview(item.text) };
      this.renderReplying();
      this.input.focus();
    });
    return button;
  }

  /** Shows what the composer answers, if anything, with a way to stop answering it. */
  private renderReplying(): void {
    const replyTo = this.current?.replyTo;
    if (!replyTo) {
      setChildren(this.replying);
      this.replying.hidden = true;
      return;
    }
    const cancel = h("button.link", { type: "button", "aria-label": "Stop replying" }, "×");
    cancel.addEventListener("click", () => {
      if (this.current) delete this.current.replyTo;
      this.renderReplying();
      this.input.focus();
    });
    setChildren(this.replying, h("span", {}, "Replying to "), quote(replyTo), cancel);
    this.replying.hidden = false;
  }

  private renderOutgoing(shown: Shown, message: Outgoing): void {
    let element = shown.pending.get(message.localId);
    if (!element) {
      element = h("div.message.own.pending");
      shown.pending.set(message.localId, element);
      shown.outbox.append(element);
    }
    element.className = `message own ${message.state}`;
    const state =
      message.state === "pending"
        ? h("div.state", {}, "Sending…")
        : message.state === "sent"
          ? h("div.state", {}, "Sent")
          : h(
              "div.state",
              {},
              `Not sent: ${message.reason ?? "unknown error"} `,
              retryButton(() => void shown.room.send(message.text, message)),
            );
    setChildren(element, message.replyTo ? quote(message.replyTo) : null, h("div.text", {}, message.text), state);
    if (shown === this.current) this.scrollToEnd(shown);
  }

  private refused(shown: Shown, reason: string): void {
    const again = h("button.link", { type: "button" }, this.identity.token ? "Sign in again" : "Change name");
    again.addEventListener("click", () => this.signOut());
    shown.log.append(h("div.notice.refused", { role: "alert" }, `The server refused: ${reason} `, again));
    if (shown === this.current) this.scrollToEnd(shown);
  }

  private renderStatus(): void {
    for (const shown of this.rooms.values()) {
      shown.tab.dataset.state = shown.room.connection.state;
    }
    const shown = this.current;
    if (!shown) return;
    const connection: ConnectionState = shown.room.connection;
    this.status.dataset.state = connection.state;
    switch (connection.state) {
      case "connecting":
        this.status.textContent = "Connecting…";
        this.status.title = "";
        break;
      case "live":
        this.status.textContent = "Live";
        this.status.title = "Connected: messages arrive as they are sent";
        break;
      case "waiting": {
        const seconds = Math.max(0, Math.ceil((connection.retryAt - Date.now()) / 1000));
        this.status.textContent = seconds > 0 ? `Reconnecting in ${seconds}s…` : "Reconnecting…";
        this.status.title = connection.reason;
        break;
      }
      case "refused":
        this.status.textContent = "Refused";
        this.status.title = connection.reason;
        break;
    }
  }

  private renderMembers(): void {
    const members = this.current?.members ?? [];
    this.membersButton.textContent = `${members.length} here`;
    this.membersButton.setAttribute("aria-label", `${members.length} here: show who`);
    setChildren(
      this.membersList,
      ...members.map(({ user, sessions }) =>
        h(
          "li",
          {},
          avatar(user),
          h("span.member-name", {}, user),
          user === this.identity.name ? h("span.you", {}, "you") : null,
          sessions > 1 ? h("span.sessions", { title: `${sessions} sessions` }, `×${sessions}`) : null,
        ),
      ),
    );
  }

  private renderBadge(shown: Shown): void {
    shown.badge.hidden = shown.unread === 0;
    shown.badge.textContent = shown.unread > 99 ? "99+" : String(shown.unread);
  }

  /** `shown` is in view: everything in it is read, here and on this person's other devices. */
  private markRead(shown: Shown): void {
    shown.unread = 0;
    this.renderBadge(shown);
    if (!document.hidden) shown.room.markRead();
  }

  private updateTitle(): void {
    const label = this.current ? this.label(this.current.room.name) : "";
    const room = label ? `${label} · ` : "";
    this.title.textContent = label;
    document.title = `${document.hidden && this.hiddenUnread ? `(${this.hiddenUnread}) ` : ""}${room}grpc-chat`;
  }

  private checkDraft(): boolean {
    const bytes = new TextEncoder().encode(this.input.value).length;
    const over = bytes - maxContentBytes;
    this.composerHint.textContent =
      over > 0 ? `${over} bytes over the limit of ${maxContentBytes}.` : "Enter to send · Shift+Enter for a new line";
    this.composerHint.classList.toggle("over", over > 0);
    this.sendButton.disabled = over > 0 || this.input.value.trim() === "";
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
    return over <= 0;
  }

  private sendDraft(): void {
    const text = this.input.value;
    if (!this.current || text.trim() === "" || !this.checkDraft()) return;
    this.input.value = "";
    this.checkDraft();
    this.tellTyping(false);
    const replyTo = this.current.replyTo;
    delete this.current.replyTo;
    this.renderReplying();
    void this.current.room.send(text, undefined, replyTo);
  }

  /** Tells the room shown whether this person is typing: again every few seconds while they
   * are, once when they stop. */
  private tellTyping(typing: boolean): void {
    const room = this.current?.room;
    if (!room) return;
    const now = Date.now();
    if (typing && now - this.typingSince >= TYPING_HEARTBEAT_MS) {
      this.typingSince = now;
      room.setTyping(true);
    } else if (!typing && this.typingSince !== 0) {
      this.typingSince = 0;
      room.setTyping(false);
    }
  }

  /** "… is typing" for the room shown, forgetting typists not heard from in time. */
  private renderTyping(): void {
    const shown = this.current;
    if (!shown) return;
    const now = Date.now();
    for (const [user, until] of shown.typists) if (until <= now) shown.typists.delete(user);
    const names = [...shown.typists.keys()].sort();
    const [first, second] = names;
    this.typingLine.textContent =
      names.length === 0
        ? ""
        : names.length === 1
          ? `${first} is typing…`
          : names.length === 2
            ? `${first} and ${second} are typing…`
            : `${names.length} people are typing…`;
  }

  private toggleMembers(force?: boolean): void {
    const open = force ?? !this.membersPanel.classList.contains("open");
    this.membersPanel.classList.toggle("open", open);
    this.membersButton.setAttribute("aria-expanded", String(open));
  }

  private shortcut(event: KeyboardEvent): void {
    if (event.key === "Escape") this.toggleMembers(false);
    if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      const index = this.order.indexOf(this.current?.room.name ?? "");
      const step = event.key === "ArrowUp" ? -1 : 1;
      const next = this.order[(index + step + this.order.length) % this.order.length];
      if (next) this.show(next);
    }
  }

  private scrollToEnd(shown: Shown | null): void {
    if (!shown) return;
    shown.scroller.scrollTop = shown.scroller.scrollHeight;
    if (shown === this.current) this.jumpButton.hidden = true;
  }
}

function nearEnd(scroller: HTMLElement): boolean {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < FOLLOW_SLACK_PX;
}

function sameDay(a: Date, b: Date): boolean {
  return a.toDateString() === b.toDateString();
}

function dayLabel(date: Date): string {
  const today = new Date();
  if (sameDay(date, today)) return "Today";
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  return sameDay(date, yesterday) ? "Yesterday" : dayFormat.format(date);
}

function timeElement(date: Date): HTMLTimeElement {
  return h("time", { datetime: date.toISOString(), title: fullFormat.format(date) }, timeFormat.format(date));
}

/** A round badge with the person's initial, coloured by their name. */
export function avatar(name: string): HTMLElement {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + (c.codePointAt(0) ?? 0)) % 360;
  const element = h("span.avatar", { "aria-hidden": "true" }, [...name][0]?.toUpperCase() ?? "?");
  element.style.setProperty("--hue", String(hash));
  return element;
}

export function logo(): HTMLElement {
  return h("span.logo", { "aria-hidden": "true" });
}

/** Most characters of a message the composer shows while replying (the server quotes its own). */
const PREVIEW_CHARS = 140;

function preview(text: string): string {
  const chars = [...text];
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS - 1).join("")}…` : text;
}

/** The quoted message of a reply: who wrote it and how it began, as text. */
function quote(replyTo: Quote): HTMLElement {
  return h("blockquote.quote", {}, h("span.quote-author", {}, replyTo.user), " ", h("span.quote-text", {}, replyTo.preview));
}

function retryButton(retry: () => void): HTMLButtonElement {
  const button = h("button.link", { type: "button" }, "Retry");
  button.addEventListener("click", retry);
  return button;
}
