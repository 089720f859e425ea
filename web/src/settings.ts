// What the server told the page when it served it (meta tags filled in by src/page.rs), and
// what the person chose (name, token, open rooms), kept in the browser.

/** Longest room name and user name the server accepts (src/room.rs). */
export const MAX_ROOM_CHARS = 64;
export const MAX_USER_CHARS = 32;

const ROOM_PATTERN = /^[A-Za-z0-9_.-]+$/;
const USER_PATTERN = /^[\p{L}\p{N} _.-]+$/u;
const NAME_KEY = "grpc-chat.name";
const TOKEN_KEY = "grpc-chat.token";

function meta(name: string): string {
  return document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? "";
}

/** Where gRPC-Web calls go: the page's origin, its host on another port, or a named origin. */
export function grpcWebBaseUrl(): string {
  const target = meta("grpc-chat-grpc-web");
  if (target === "") return location.origin;
  if (target.startsWith(":")) return `${location.protocol}//${location.hostname}${target}`;
  return target;
}

/** The token claim naming the user when the server accepts tokens; empty with auth off. */
export const userClaim = meta("grpc-chat-user-claim");
export const maxContentBytes = Number(meta("grpc-chat-max-content-bytes")) || 4096;

/** Why `room` is not a room name, or null. */
export function roomProblem(room: string): string | null {
  if (room.length === 0) return "Name a room.";
  if (room.length > MAX_ROOM_CHARS) return `Room names have at most ${MAX_ROOM_CHARS} characters.`;
  if (!ROOM_PATTERN.test(room)) return "Room names use only A-Z, a-z, 0-9, '_', '-' and '.'.";
  return null;
}

/** Why `name` is not a user name, or null. */
export function nameProblem(name: string): string | null {
  if (name.length === 0) return "Choose a name.";
  if ([...name].length > MAX_USER_CHARS) return `Names have at most ${MAX_USER_CHARS} characters.`;
  if (name.trim() !== name) return "Names do not start or end with a space.";
  if (!USER_PATTERN.test(name)) return "Names use letters, digits, spaces, '_', '-' and '.'.";
  return null;
}

/** Who the person is: a name they chose, or a token whose claim names them. */
export interface Identity {
  name: string;
  token: string;
}

export function savedIdentity(): Identity | null {
  const token = sessionStorage.getItem(TOKEN_KEY) ?? "";
  const name = token ? tokenUser(token) : (localStorage.getItem(NAME_KEY) ?? "");
  return name || token ? { name, token } : null;
}

export function saveIdentity(identity: Identity | null): void {
  if (identity === null) {
    sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  if (identity.token) sessionStorage.setItem(TOKEN_KEY, identity.token);
  else {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.setItem(NAME_KEY, identity.name);
  }
}

/** A token's claims, read without verifying them (the server verifies); empty when the page
 * cannot read them (the server says why when it refuses the token). */
function tokenClaims(token: string): Record<string, unknown> {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims === "object" && claims !== null) return claims as Record<string, unknown>;
  } catch {
    // Not a JWT the page can read.
  }
  return {};
}

/** The user a token names in its claim. */
export function tokenUser(token: string): string {
  const user = tokenClaims(token)[userClaim || "sub"];
  return typeof user === "string" ? user : "";
}

/** Whether a token's rooms claim grants the `moderate` capability in `room` (`PATTERN:caps`
 * grants, `*` standing for any run of characters): the page then offers to delete anyone's
 * messages there. The server decides; this only decides what to offer. */
export function moderates(token: string, room: string): boolean {
  const rooms = tokenClaims(token)["rooms"];
  if (!Array.isArray(rooms)) return false;
  return rooms.some((grant) => {
    if (typeof grant !== "string") return false;
    const split = grant.lastIndexOf(":");
    const [pattern, capabilities] = [grant.slice(0, split), grant.slice(split + 1)];
    if (!capabilities.split(",").some((capability) => capability.trim() === "moderate")) return false;
    const escaped = pattern.split("*").map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    return new RegExp(`^${escaped.join(".*")}$`).test(room);
  });
}

/** The rooms the address names (`#general,random`), valid ones only, without repeats. */
export function roomsInAddress(): string[] {
  const rooms = decodeURIComponent(location.hash.slice(1))
    .split(",")
    .map((room) => room.trim())
    .filter((room) => roomProblem(room) === null);
  return [...new Set(rooms)];
}

/** Puts the open rooms, the one shown first, in the address, so a link opens them. */
export function showRoomsInAddress(rooms: string[]): void {
  history.replaceState(null, "", rooms.length ? `#${rooms.join(",")}` : location.pathname);
}
