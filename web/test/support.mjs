// What the browser tests run against: the real server binary, the real Envoy with the compose
// config, Debian's Chromium driven by playwright-core, and the grpc-chat CLI.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";

export const root = new URL("../..", import.meta.url).pathname;
const binary = process.env.GRPC_CHAT_RELEASE_BIN ?? join(root, "target/release/grpc-chat");
const envoyBinary = join(root, ".tools/venv/bin/envoy");
/** Chromium's flags for a headless run on a machine without a GPU or a network. */
const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** The longest any state the tests wait for may take. */
export const PATIENCE_MS = 15_000;

/** A free TCP port on loopback. */
export async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Calls `probe` until it returns something truthy, or fails after `PATIENCE_MS`. */
export async function eventually(what, probe) {
  const deadline = Date.now() + PATIENCE_MS;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A grpc-chat server process on loopback. */
export class Server {
  /** Starts one; `ports` (from an earlier one) to come back on the same ports. */
  static async start({ args = [], env = {}, ports = null } = {}) {
    const [grpc, ws, admin] = ports ?? [0, 0, 0];
    const child = spawn(
      binary,
      [
        "serve",
        `--listen=127.0.0.1:${grpc}`,
        `--ws-listen=127.0.0.1:${ws}`,
        `--admin-listen=127.0.0.1:${admin}`,
        "--shutdown-grace=2s",
        ...args,
      ],
      { env: { ...process.env, RUST_LOG: "info", ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const server = new Server(child);
    await eventually("the server to listen", () => server.addrs);
    return server;
  }

  constructor(child) {
    this.child = child;
    this.log = "";
    this.addrs = null;
    this.exited = new Promise((resolve) => child.on("exit", resolve));
    const read = (chunk) => {
      this.log += chunk;
      const listening = this.log.match(/listening addr=(\S+) ws_addr=(\S+) admin_addr=(\S+)/);
      if (listening && !this.addrs) this.addrs = listening.slice(1);
    };
    child.stdout.setEncoding("utf8").on("data", read);
    child.stderr.setEncoding("utf8").on("data", read);
  }

  get grpcUrl() {
    return `http://${this.addrs[0]}`;
  }
  /** The chat page. */
  get pageUrl() {
    return `http://${this.addrs[1]}/`;
  }
  get ports() {
    return this.addrs.map((addr) => Number(addr.split(":").pop()));
  }

  /** Stops it with SIGTERM (it drains) and waits for it to exit. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    const exited = await Promise.race([this.exited.then(() => true), sleep(PATIENCE_MS, false)]);
    if (!exited) {
      this.child.kill("SIGKILL");
      throw new Error(`the server did not stop on SIGTERM:\n${this.log}`);
    }
  }
}

/** Runs the grpc-chat CLI (against `server`, if given); resolves to what it printed. */
export function cli(server, args, env = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      binary,
      server ? [args[0], `--addr=${server.grpcUrl}`, ...args.slice(1)] : args,
      { env: { ...process.env, ...env }, timeout: PATIENCE_MS },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
}

/** `grpc-chat subscribe` running in the background, collecting what it prints. */
export function cliSubscriber(server, room) {
  const child = spawn(binary, ["subscribe", `--addr=${server.grpcUrl}`, "-r", room], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const subscriber = { output: "", stop: () => child.kill("SIGTERM") };
  child.stdout.setEncoding("utf8").on("data", (chunk) => (subscriber.output += chunk));
  return subscriber;
}

/** Envoy with the compose config (deploy/envoy/envoy.yaml), its replicas being `server`. */
export class Envoy {
  static async start(server) {
    const [grpc, ws] = server.ports;
    const [port, admin] = [await freePort(), await freePort()];
    let config = readFileSync(join(root, "deploy/envoy/envoy.yaml"), "utf8");
    for (const [compose, local] of [
      ["{ address: 0.0.0.0, port_value: 8080 }", port],
      ["{ address: 0.0.0.0, port_value: 9901 }", admin],
      ["{ address: grpc-chat-1, port_value: 50051 }", grpc],
      ["{ address: grpc-chat-2, port_value: 50051 }", grpc],
      ["{ address: grpc-chat-1, port_value: 8080 }", ws],
      ["{ address: grpc-chat-2, port_value: 8080 }", ws],
    ]) {
      config = config.replaceAll(compose, `{ address: 127.0.0.1, port_value: ${local} }`);
    }
    if (config.includes("0.0.0.0") || config.includes("address: grpc-chat")) {
      throw new Error("an address of the compose config was not replaced");
    }
    const dir = mkdtempSync(join(tmpdir(), "grpc-chat-envoy-"));
    writeFileSync(join(dir, "envoy.yaml"), config);
    const child = spawn(
      envoyBinary,
      ["-c", join(dir, "envoy.yaml"), "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    const envoy = { url: `http://127.0.0.1:${port}/`, child, dir };
    await eventually("Envoy to serve the page", async () => {
      try {
        return (await fetch(envoy.url)).ok;
      } catch {
        return false;
      }
    });
    return envoy;
  }

  static async stop(envoy) {
    const exited = new Promise((resolve) => envoy.child.on("exit", resolve));
    envoy.child.kill("SIGTERM");
    await exited;
    rmSync(envoy.dir, { recursive: true, force: true });
  }
}

/** Debian's Chromium, headless. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_FLAGS,
  });
}

/** Screen sizes the tests look at the page in. */
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * A person with their own browser profile: opens `url` at `rooms` and signs in as `name` (or with
 * `token`). Collects the page's errors and Content-Security-Policy violations.
 */
export async function person(browser, url, { name = "", token = "", rooms = "", viewport = DESKTOP } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  await page.goto(`${url}${rooms ? `#${rooms}` : ""}`);
  await page.getByLabel("Your name").fill(name);
  if (token) await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Start chatting" }).click();
  return page;
}

/** The texts of the chat messages `page` shows in the room shown, in order. */
export function messageTexts(page) {
  return page.locator(".log .message .text").allTextContents();
}

/** Waits until `page` shows a chat message with exactly `text`. */
export async function seesMessage(page, text) {
  await page.locator(".log .message .text", { hasText: text }).first().waitFor({ timeout: PATIENCE_MS });
}

/** Waits until the room shown is live. */
export async function live(page) {
  await page.locator('.status[data-state="live"]').waitFor({ timeout: PATIENCE_MS });
}

/** Types `text` into the composer and presses Enter. */
export async function say(page, text) {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByLabel("Message", { exact: true }).press("Enter");
}
