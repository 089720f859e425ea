// One open room: its subscription, kept alive with reconnects that resume where the page left
// off; sending with acknowledgements; who is here. The view listens to what happens here.

import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ChatService, MessageType, Notice, type Message } from "../gen/chat_pb.js";

/** How many earlier messages a room opens with. */
const OPENING_HISTORY = 50;
/** Items a room keeps (shown, and saved for a reload); older ones are forgotten. */
const KEPT_ITEMS = 200;
/** Reconnect backoff: the first wait, the longest, and the spread around each. */
const FIRST_RETRY_MS = 500;
const LONGEST_RETRY_MS = 15_000;
const RETRY_JITTER = 0.2;
/** Who-is-here is asked again this long after a join or leave (several come together). */
const PRESENCE_REFRESH_MS = 150;
/** How far the server's clock may be behind the browser's when telling history from news. */
const CLOCK_SKEW_MS = 2_000;
/** A SendMessage that has not been answered in this long has failed. */
const SEND_TIMEOUT_MS = 10_000;
/** A read marker that could not be stored is tried again after this long. */
const MARK_RETRY_MS = 1_000;
/** While this person types, the room is told at most this often. */
export const TYPING_HEARTBEAT_MS = 3_000;
/** Someone not heard typing for this long is taken to have stopped. */
export const TYPING_TIMEOUT_MS = 6_000;

export type ItemKind = "chat" | "join" | "leave" | "notice";

/** A line of a room: a message of its log, or a notice from the server. */
export interface Item {
  kind: ItemKind;
  id: string;
  user: string;
  text: string;
  /** Milliseconds since the epoch. */
  time: number;
  /** Position in the room's log (as a decimal string; 0 for notices). */
  offset: string;
  /** On a reply: what it answers, as the server quoted it. */
  reply?: Quote;
  /** Edits so far (absent: none). */
  version?: number;
  /** Deleted: a tombstone without text. */
  deleted?: boolean;
  /** Its reactions, by key in the order first used. */
  reactions?: Reaction[];
}

/** One reaction key on a message: how many reacted with it, and (the first few of) who. */
export interface Reaction {
  key: string;
  count: number;
  users: string[];
}

/** The message a reply answers: its offset, author and first characters. */
export interface Quote {
  offset: string;
  user: string;
  preview: string;
}

export type ConnectionState =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "waiting"; retryAt: number; reason: string }
  | { state: "refused"; reason: string };

/** A message the person sent: pending until the server answers, then sent or failed. */
export interface Outgoing {
  localId: number;
  /** The message it answers, when it is a reply. */
  replyTo?: Quote;
  /** Sent with every try: the server stores the message once, however often it is retried. */
  clientMessageId: string;
  text: string;
  state: "pending" | "sent" | "failed";
  reason?: string;
  /** Once sent: its id and offset, by which the feed's copy replaces it. */
  id?: string;
}

export interface RoomEvents {
  /** Items arrived (in order); `replayed` when they are the room's history, not live. */
  added(items: Item[], replayed: boolean): void;
  outgoing(message: Outgoing): void;
  /** The feed delivered the copy of an outgoing message, which is no longer pending. */
  delivered(localId: number): void;
  connection(state: ConnectionState): void;
  members(members: { user: string; sessions: number }[]): void;
  /** Where this person has read the room up to moved (here or on another device). */
  read(unread: number): void;
  /** Someone else is typing in the room, or stopped. */
  typing(user: string, typing: boolean): void;
  /** A message shown was edited, deleted or reacted to. */
  changed(item: Item): void;
}

/** What a room keeps across a reload of the page (in sessionStorage). */
interface Saved {
  epoch: string;
  lastOffset: string;
  items: Item[];
}

let nextLocalId = 1;

/** A fresh client message id: 128 random bits in hex (`crypto.randomUUID` needs HTTPS). */
function newClientMessageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export class Room {
  readonly name: string;
  readonly items: Item[] = [];
  connection: ConnectionState = { state: "connecting" };
  private epoch = "";
  private lastOffset = 0n;
  private readonly outgoing = new Map<number, Outgoing>();
  private readonly abort = new AbortController();
  private presenceTimer: number | undefined;
  private retryNow: (() => void) | undefined;
  /** The last offset read, as the server keeps it for this person (every device's). */
  private readOffset = 0n;
  /** The server's count of unread messages, and the offset this page had then: what counts
   * when the page does not hold every message after the marker. */
  private serverUnread = { count: 0, at: 0n };
  /** A marker being stored, and whether another is wanted once it is. */
  private marking = false;
  private markAgain = false;
  private markTimer: number | undefined;

  constructor(
    name: string,
    private readonly client: Client<typeof ChatService>,
    private readonly user: string,
    private readonly events: RoomEvents,
  ) {
    this.name = name;
    const saved = load(name);
    if (saved) {
      this.epoch = saved.epoch;
      this.lastOffset = BigInt(saved.lastOffset);
      this.items.push(...saved.items);
    }
  }

  /** Shows what was saved, then follows the room until closed. */
  open(): void {
    if (this.items.length) this.events.added([...this.items], true);
    void this.follow();
  }

  /** Stops following (the server announces the leave) and forgets the room. */
  close(): void {
    this.abort.abort();
    window.clearTimeout(this.presenceTimer);
    window.clearTimeout(this.markTimer);
    sessionStorage.removeItem(storageKey(this.name));
  }

  /** Tries again now if waiting to reconnect (the network came back). */
  reconnectNow(): void {
    this.retryNow?.();
  }

  /** Sends `text`; the outgoing message is pending until the server acknowledges it. */
  async send(text: string, retrying?: Outgoing, replyTo?: Quote): Promise<void> {
    const message: Outgoing = retrying ?? {
      localId: nextLocalId++,
      clientMessageId: newClientMessageId(),
      text,
      state: "pending",
      ...(replyTo ? { replyTo } : {}),
    };
    message.state = "pending";
    delete message.reason;
    this.outgoing.set(message.localId, message);
    this.events.outgoing(message);
    try {
      const response = await this.client.sendMessage(
        {
          room: this.name,
          user: this.user,
          content: text,
          clientMessageId: message.clientMessageId,
          replyTo: BigInt(message.replyTo?.offset ?? "0"),
          replyToEpoch: message.replyTo ? this.epoch : "",
        },
        { signal: this.abort.signal, timeoutMs: SEND_TIMEOUT_MS },
      );
      message.state = "sent";
      message.id = response.messageId;
      if (this.items.some((item) => item.id === response.messageId)) {
        // The feed was quicker than the answer: its copy is already shown.
        this.outgoing.delete(message.localId);
        this.events.delivered(message.localId);
      } else {
        this.events.outgoing(message);
      }
    } catch (error) {
      if (this.abort.signal.aborted) return;
      message.state = "failed";
      message.reason = describe(error);
      this.events.outgoing(message);
    }
  }

  /** Gives the message at `offset` (this person's) a new text; why not, or null. */
  edit(offset: string, text: string): Promise<string | null> {
    const request = { room: this.name, user: this.user, offset: BigInt(offset), epoch: this.epoch, content: text };
    return this.settle(this.client.editMessage(request, { signal: this.abort.signal }));
  }

  /** Deletes the message at `offset` (this person's, or anyone's for a moderator); why not, or
   * null. */
  delete(offset: string): Promise<string | null> {
    const request = { room: this.name, user: this.user, offset: BigInt(offset), epoch: this.epoch };
    return this.settle(this.client.deleteMessage(request, { signal: this.abort.signal }));
  }

  /** Adds this person's reaction `key` to the message at `offset`, or takes it back; why not,
   * or null. */
  react(offset: string, key: string, removed: boolean): Promise<string | null> {
    const request = { room: this.name, user: this.user, offset: BigInt(offset), epoch: this.epoch, reaction: key, removed };
    return this.settle(this.client.react(request, { signal: this.abort.signal }));
  }

  /** Null once `call` succeeded (the change comes back on the feed), else why it failed. */
  private async settle(call: Promise<unknown>): Promise<string | null> {
    try {
      await call;
      return null;
    } catch (error) {
      return describe(error);
    }
  }

  /** Tells the others in the room that this person is typing, or stopped (best effort: it is
   * about the moment, and receivers forget a typist they stop hearing from). */
  setTyping(typing: boolean): void {
    void this.client
      .setTyping({ room: this.name, user: this.user, typing }, { signal: this.abort.signal })
      .catch(() => undefined);
  }

  /** Marks everything received so far read, for every device of this person. */
  markRead(): void {
    if (this.lastOffset <= this.readOffset || this.epoch === "") return;
    if (this.marking) {
      this.markAgain = true;
      return;
    }
    this.marking = true;
    const offset = this.lastOffset;
    void this.client
      .markRead({ room: this.name, user: this.user, offset, epoch: this.epoch }, { signal: this.abort.signal })
      .then(
        (state) => this.readState(state.epoch, state.readOffset, Number(state.unread)),
        () => {
          // Over the rate, or the server away: the marker is stored on a later try.
          window.clearTimeout(this.markTimer);
          this.markTimer = window.setTimeout(() => this.markRead(), MARK_RETRY_MS);
        },
      )
      .finally(() => {
        this.marking = false;
        if (this.markAgain) {
          this.markAgain = false;
          this.markRead();
        }
      });
  }

  /** The server's word on where this person has read up to. */
  private readState(epoch: string, readOffset: bigint, unread: number): void {
    if (epoch !== this.epoch) return;
    if (readOffset > this.readOffset) this.readOffset = readOffset;
    this.serverUnread = { count: unread, at: this.lastOffset };
    this.events.read(this.unread());
  }

  /** Chat messages after where this person has read up to: counted in what the page holds
   * when it holds them all (a marker and a message may arrive in either order), else the
   * server's count plus what came since. */
  unread(): number {
    const after = (offset: bigint): number =>
      this.items.filter((item) => item.kind === "chat" && BigInt(item.offset) > offset).length;
    const first = this.items.find((item) => item.kind !== "notice");
    const holdsAll = first !== undefined && BigInt(first.offset) <= this.readOffset + 1n;
    if (holdsAll || this.serverUnread.at === 0n) return after(this.readOffset);
    const since = this.serverUnread.at > this.readOffset ? this.serverUnread.at : this.readOffset;
    return this.serverUnread.count + after(since);
  }

  private async follow(): Promise<void> {
    let attempt = 0;
    while (!this.abort.signal.aborted) {
      this.setConnection({ state: "connecting" });
      try {
        const resuming = this.lastOffset > 0n && this.epoch !== "";
        const request = resuming
          ? { room: this.name, user: this.user, fromOffset: this.lastOffset + 1n, epoch: this.epoch, signals: true, changes: true }
          : { room: this.name, user: this.user, last: OPENING_HISTORY, signals: true, changes: true };
        // What was sent before this subscription opened is history, not news.
        const openedAt = Date.now() - CLOCK_SKEW_MS;
        for await (const message of this.client.subscribeMessages(request, {
          signal: this.abort.signal,
        })) {
          if (message.notice === Notice.WELCOME) {
            attempt = 0;
            if (message.epoch !== this.epoch) this.readOffset = 0n;
            this.epoch = message.epoch;
            this.setConnection({ state: "live" });
            this.refreshMembers(0);
            void this.fetchReadState();
            continue;
          }
          if (message.type === MessageType.READ) {
            this.readState(message.epoch, message.readOffset, Number(message.unread));
            continue;
          }
          if (message.type === MessageType.TYPING) {
            this.events.typing(message.user, message.typing);
            continue;
          }
          if (CHANGES.has(message.type)) {
            this.change(message);
            continue;
          }
          this.receive(message, openedAt);
        }
        throw new ConnectError("the server ended the stream", Code.Unavailable);
      } catch (error) {
        if (this.abort.signal.aborted) return;
        const code = error instanceof ConnectError ? error.code : Code.Unknown;
        if (code === Code.OutOfRange) {
          // Our position is beyond the room's end (its log was cut back): start afresh.
          this.lastOffset = 0n;
          continue;
        }
        if (
          code === Code.Unauthenticated ||
          code === Code.PermissionDenied ||
          code === Code.InvalidArgument
        ) {
          this.setConnection({ state: "refused", reason: describe(error) });
          return;
        }
        const wait = Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** attempt);
        const jittered = wait * (1 - RETRY_JITTER + 2 * RETRY_JITTER * Math.random());
        attempt += 1;
        this.setConnection({
          state: "waiting",
          retryAt: Date.now() + jittered,
          reason: describe(error),
        });
        await new Promise<void>((resolve) => {
          const timer = window.setTimeout(resolve, jittered);
          this.retryNow = () => {
            window.clearTimeout(timer);
            resolve();
          };
          this.abort.signal.addEventListener("abort", () => resolve(), { once: true });
        });
        this.retryNow = undefined;
      }
    }
  }

  private receive(message: Message, openedAt: number): void {
    const time = message.timestamp ? timestampDate(message.timestamp).getTime() : Date.now();
    const replayed = time < openedAt;
    if (message.type === MessageType.SYSTEM) {
      const text = noticeText(message);
      if (text === null) return;
      if (message.notice === Notice.RESET) {
        this.epoch = message.epoch;
        this.lastOffset = 0n;
        this.readOffset = 0n;
      }
      this.add({ kind: "notice", id: "", user: "", text, time, offset: "0" }, replayed);
      return;
    }
    if (message.epoch === this.epoch && message.offset <= this.lastOffset) return;
    if (message.epoch !== this.epoch) this.readOffset = 0n;
    this.epoch = message.epoch;
    this.lastOffset = message.offset;
    const kind: ItemKind =
      message.type === MessageType.JOIN ? "join" : message.type === MessageType.LEAVE ? "leave" : "chat";
    if (kind !== "chat") this.refreshMembers(PRESENCE_REFRESH_MS);
    const item: Item = {
      kind,
      id: message.id,
      user: message.user,
      text: message.content,
      time,
      offset: message.offset.toString(),
    };
    if (message.replyTo > 0n) {
      item.reply = { offset: message.replyTo.toString(), user: message.replyAuthor, preview: message.replyPreview };
    }
    // Replay serves a message as it stands.
    if (message.version > 0) item.version = message.version;
    if (message.deleted) item.deleted = true;
    if (message.reactions.length) {
      item.reactions = message.reactions.map(({ key, count, users }) => ({ key, count, users: [...users] }));
    }
    for (const [localId, outgoing] of this.outgoing) {
      if (outgoing.id === message.id) {
        this.outgoing.delete(localId);
        this.events.delivered(localId);
      }
    }
    this.add(item, replayed);
  }

  /** Applies an edit, delete or reaction to the message it names, if the page holds it: an edit
   * only when newer than the text held and the message is not deleted, a reaction as a set. */
  private change(message: Message): void {
    if (message.epoch === this.epoch && message.offset <= this.lastOffset) return;
    this.epoch = message.epoch;
    this.lastOffset = message.offset;
    const target = message.target.toString();
    const item = this.items.find((held) => held.kind === "chat" && held.offset === target);
    if (item && !item.deleted) {
      if (message.type === MessageType.EDIT && message.version > (item.version ?? 0)) {
        item.text = message.content;
        item.version = message.version;
      } else if (message.type === MessageType.DELETE) {
        item.deleted = true;
        item.text = "";
        delete item.reply;
        delete item.reactions;
      } else if (message.type === MessageType.REACTION) {
        react(item, message.reaction, message.user, !message.removed);
      }
      this.events.changed(item);
    }
    save(this.name, { epoch: this.epoch, lastOffset: this.lastOffset.toString(), items: this.items });
  }

  private add(item: Item, replayed: boolean): void {
    this.items.push(item);
    if (this.items.length > KEPT_ITEMS) this.items.splice(0, this.items.length - KEPT_ITEMS);
    save(this.name, { epoch: this.epoch, lastOffset: this.lastOffset.toString(), items: this.items });
    this.events.added([item], replayed);
  }

  /** Asks where this person has read up to (on (re)connecting: other devices may have read on). */
  private async fetchReadState(): Promise<void> {
    try {
      const state = await this.client.getReadState({ room: this.name, user: this.user }, { signal: this.abort.signal });
      this.readState(state.epoch, state.readOffset, Number(state.unread));
    } catch {
      // Asked again on the next reconnect; the page's own count stands meanwhile.
    }
  }

  private setConnection(state: ConnectionState): void {
    this.connection = state;
    this.events.connection(state);
  }

  private refreshMembers(delayMs: number): void {
    window.clearTimeout(this.presenceTimer);
    this.presenceTimer = window.setTimeout(async () => {
      try {
        const state = await this.client.getRoom({ room: this.name }, { signal: this.abort.signal });
        this.events.members(state.members.map(({ user, sessions }) => ({ user, sessions })));
      } catch {
        // Asked again on the next join, leave or reconnect.
      }
    }, delayMs);
  }
}

/** The kinds of messages that change an earlier one. */
const CHANGES = new Set([MessageType.EDIT, MessageType.DELETE, MessageType.REACTION]);
/** Most names the server lists per reaction (its count covers everyone). */
const REACTION_USERS_SHOWN = 10;

/** Adds (or takes back) `user`'s reaction `key` on `item`. The server sends only changes that
 * changed something, so an addition is new and a removal was there. */
function react(item: Item, key: string, user: string, added: boolean): void {
  const reactions = (item.reactions ??= []);
  const reaction = reactions.find((held) => held.key === key);
  if (added) {
    if (!reaction) reactions.push({ key, count: 1, users: [user] });
    else {
      reaction.count += 1;
      if (reaction.users.length < REACTION_USERS_SHOWN && !reaction.users.includes(user)) reaction.users.push(user);
    }
  } else if (reaction) {
    reaction.count -= 1;
    reaction.users = reaction.users.filter((who) => who !== user);
    if (reaction.count <= 0) reactions.splice(reactions.indexOf(reaction), 1);
  }
  if (reactions.length === 0) delete item.reactions;
}

/** The text of a notice worth showing, or null (the welcome only says the room is live). */
function noticeText(message: Message): string | null {
  switch (message.notice) {
    case Notice.GAP:
      return `${message.missed} messages are no longer in the room's history and were missed.`;
    case Notice.RESET:
      return "The room's history started again (the server restarted or the room was emptied): what follows is what it holds now.";
    case Notice.CLOSING:
      return null;
    case Notice.WELCOME:
      return null;
    default:
      return message.content;
  }
}

/** What went wrong, in the server's words where it gave them. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) {
    if (error.code === Code.Unknown || error.code === Code.Unavailable) {
      return error.rawMessage.includes("fetch") || error.rawMessage === ""
        ? "cannot reach the server"
        : error.rawMessage;
    }
    return error.rawMessage || Code[error.code];
  }
  return error instanceof Error ? error.message : String(error);
}

function storageKey(room: string): string {
  return `grpc-chat.room.${room}`;
}

function load(room: string): Saved | null {
  try {
    const raw = sessionStorage.getItem(storageKey(room));
    return raw ? (JSON.parse(raw) as Saved) : null;
  } catch {
    return null;
  }
}

function save(room: string, saved: Saved): void {
  try {
    sessionStorage.setItem(storageKey(room), JSON.stringify(saved));
  } catch {
    // Storage is full: a reload then starts the room from its recent history.
  }
}
