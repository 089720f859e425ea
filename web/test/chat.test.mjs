// The chat page in a real Chromium against the real server: what a person sees.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  DESKTOP,
  Envoy,
  PATIENCE_MS,
  PHONE,
  Server,
  cli,
  cliSubscriber,
  eventually,
  launchBrowser,
  live,
  messageTexts,
  person,
  root,
  say,
  seesMessage,
} from "./support.mjs";

const screenshots = join(root, "target/screenshots");
let browser;

before(async () => {
  browser = await launchBrowser();
  mkdirSync(screenshots, { recursive: true });
});
after(() => browser?.close());

describe("two people and the CLI in one room", () => {
  let server;
  before(async () => (server = await Server.start()));
  after(() => server?.stop());

  test("they see each other's messages, who is here, and the joins", async () => {
    const subscriber = cliSubscriber(server, "lobby");
    const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "lobby" });
    await live(alice);
    const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "lobby" });
    await live(bob);

    await alice.locator(".presence", { hasText: "bob joined" }).waitFor();
    await eventually("both listed as here", async () => {
      const members = await alice.locator(".member-list .member-name").allTextContents();
      return members.join() === "alice,bob";
    });

    await say(alice, "Hi Bob! Did the deploy go out?");
    await seesMessage(bob, "Hi Bob! Did the deploy go out?");
    await say(bob, "Yes, 10 minutes ago — all green.");
    await seesMessage(alice, "Yes, 10 minutes ago — all green.");
    await cli(server, ["send", "-r", "lobby", "-u", "carol", "Confirmed from the terminal."]);
    await seesMessage(alice, "Confirmed from the terminal.");
    await seesMessage(bob, "Confirmed from the terminal.");
    await eventually("the CLI subscriber to see the page's messages", () =>
      subscriber.output.includes("Hi Bob! Did the deploy go out?") &&
      subscriber.output.includes("Yes, 10 minutes ago — all green."),
    );
    subscriber.stop();

    // Own messages are marked and acknowledged; others' carry their author.
    const own = alice.locator(".log .message.own", { hasText: "Hi Bob!" });
    await own.waitFor();
    assert.equal(await alice.locator(".outbox .message").count(), 0, "nothing left pending");
    const theirs = alice.locator(".log .message:not(.own)", { hasText: "all green" });
    assert.match(await theirs.locator(".author").textContent(), /^bob$/);
    assert.match(await theirs.locator("time").textContent(), /\d{1,2}[:.]\d{2}/);

    assert.deepEqual(await messageTexts(bob), [
      "Hi Bob! Did the deploy go out?",
      "Yes, 10 minutes ago — all green.",
      "Confirmed from the terminal.",
    ]);

    await say(alice, "Great. I'll close the incident.");
    await seesMessage(bob, "Great. I'll close the incident.");
    await say(bob, "Thanks — merci !");
    await seesMessage(alice, "Thanks — merci !");
    await alice.screenshot({ path: join(screenshots, "conversation-desktop.png"), animations: "disabled" });
    await bob.setViewportSize(PHONE);
    await bob.screenshot({ path: join(screenshots, "conversation-phone.png"), animations: "disabled" });
    await bob.setViewportSize(DESKTOP);
    assert.deepEqual([...alice.problems, ...bob.problems], []);
    await alice.context().close();
    await bob.context().close();
  });
});

describe("sending", () => {
  test("a send whose answer was lost and is retried is stored once", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "retries" });
      await live(alice);
      const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "retries" });
      await live(bob);
      // The first SendMessage reaches the server, but its answer is lost on the way back.
      let lost = 0;
      await alice.route("**/chat.ChatService/SendMessage", async (route) => {
        if (lost++ > 0) return route.continue();
        await route.fetch();
        await route.abort("connectionreset");
      });
      await say(alice, "sent once, answered late");
      await seesMessage(bob, "sent once, answered late");
      const failed = alice.locator(".outbox .message.failed", { hasText: "sent once, answered late" });
      await failed.waitFor({ timeout: PATIENCE_MS });
      await failed.getByRole("button", { name: "Retry" }).click();
      await eventually("the retry to be acknowledged", async () => (await alice.locator(".outbox .message").count()) === 0);
      assert.equal(lost, 2, "the page tried twice");
      await cli(server, ["send", "-r", "retries", "-u", "carol", "after the retry"]);
      await seesMessage(bob, "after the retry");
      await seesMessage(alice, "after the retry");
      for (const page of [alice, bob]) {
        assert.deepEqual(await messageTexts(page), ["sent once, answered late", "after the retry"]);
      }
      await alice.screenshot({ path: join(screenshots, "retried-send.png"), animations: "disabled" });
      assert.deepEqual(
        alice.problems.filter((problem) => !problem.includes("ERR_CONNECTION_RESET")),
        [],
      );
      await alice.context().close();
      await bob.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("replies", () => {
  test("a reply shows what it answers, for everyone and after a reload", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "release" });
      await live(alice);
      const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "release" });
      await live(bob);
      await say(alice, "Which release has the fix?");
      await seesMessage(bob, "Which release has the fix?");
      const asked = bob.locator(".log .message", { hasText: "Which release has the fix?" });
      await asked.hover();
      await asked.getByRole("button", { name: "Reply to alice" }).click();
      await bob.locator(".replying .quote", { hasText: "Which release has the fix?" }).waitFor();
      await say(bob, "1.4, out since Monday");
      await bob.locator(".replying").waitFor({ state: "hidden" });
      for (const page of [alice, bob]) {
        const answer = page.locator(".log .message", { hasText: "1.4, out since Monday" });
        await answer.waitFor({ timeout: PATIENCE_MS });
        assert.equal(await answer.locator(".quote-author").textContent(), "alice");
        assert.equal(await answer.locator(".quote-text").textContent(), "Which release has the fix?");
      }
      // Markup in a quote is text, as in a message.
      await say(alice, "<b>bold?</b>");
      await seesMessage(bob, "<b>bold?</b>");
      const markup = bob.locator(".log .message", { hasText: "<b>bold?</b>" });
      await markup.hover();
      await markup.getByRole("button", { name: "Reply to alice" }).click();
      await say(bob, "no");
      const quoted = alice.locator(".log .message", { hasText: "no" }).locator(".quote-text");
      await quoted.waitFor({ timeout: PATIENCE_MS });
      assert.equal(await quoted.textContent(), "<b>bold?</b>");
      assert.equal(await alice.locator(".log .quote b").count(), 0);
      await alice.screenshot({ path: join(screenshots, "replies.png"), animations: "disabled" });
      // A reload replays the room: the reply still shows what it answers.
      await alice.reload();
      await live(alice);
      const again = alice.locator(".log .message", { hasText: "1.4, out since Monday" }).locator(".quote-text");
      assert.equal(await again.textContent(), "Which release has the fix?");
      assert.deepEqual([...alice.problems, ...bob.problems], []);
      await alice.context().close();
      await bob.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("edits, deletes and reactions", () => {
  test("people edit and delete their own messages and react to any, and everyone sees it", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "plans" });
      await live(alice);
      const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "plans" });
      await live(bob);
      for (const page of [alice, bob]) page.on("dialog", (dialog) => void dialog.accept());
      await say(alice, "Lunch at noon?");
      await seesMessage(bob, "Lunch at noon?");
      // Bob may reply and react to Alice's message, not edit or delete it.
      const asked = bob.locator(".log .message", { hasText: "Lunch at noon?" });
      await asked.hover();
      assert.equal(await asked.getByRole("button", { name: "Edit your message" }).count(), 0);
      assert.equal(await asked.getByRole("button", { name: /^Delete/ }).count(), 0);

      // Alice edits hers with the keyboard: Enter saves.
      const mine = alice.locator(".log .message.own", { hasText: "Lunch at noon?" });
      await mine.hover();
      await mine.getByRole("button", { name: "Edit your message" }).click();
      const field = alice.getByRole("textbox", { name: "Edit message" });
      await field.fill("Lunch at 12:30?");
      await field.press("Enter");
      for (const page of [alice, bob]) {
        const edited = page.locator(".log .message", { hasText: "Lunch at 12:30?" });
        await edited.locator(".edited").waitFor({ timeout: PATIENCE_MS });
        assert.equal(await page.locator(".log .message", { hasText: "Lunch at noon?" }).count(), 0);
      }

      // Bob reacts; Alice sees the count, adds hers by pressing it, Bob takes his back.
      const theirs = bob.locator(".log .message", { hasText: "Lunch at 12:30?" });
      await theirs.hover();
      await theirs.getByRole("button", { name: "React to alice" }).click();
      await theirs.getByRole("button", { name: "React with 👍" }).click();
      const aliceSees = alice.locator(".log .message", { hasText: "Lunch at 12:30?" }).locator(".reaction");
      await eventually("alice to see bob's reaction", async () => (await aliceSees.textContent()) === "👍 1");
      assert.equal(await aliceSees.getAttribute("aria-pressed"), "false");
      await aliceSees.click();
      const bobSees = theirs.locator(".reaction");
      await eventually("bob to see two", async () => (await bobSees.textContent()) === "👍 2");
      assert.equal(await bobSees.getAttribute("aria-pressed"), "true");
      await alice.screenshot({ path: join(screenshots, "reactions.png"), animations: "disabled" });
      await bobSees.click();
      await eventually("alice to see one again", async () => (await aliceSees.textContent()) === "👍 1");
      assert.equal(await aliceSees.getAttribute("aria-pressed"), "true");

      // Alice deletes it: a tombstone for everyone, without its text or reactions.
      await say(alice, "Wrong room, sorry");
      await seesMessage(bob, "Wrong room, sorry");
      const wrong = alice.locator(".log .message.own", { hasText: "Wrong room, sorry" });
      await wrong.hover();
      await wrong.getByRole("button", { name: "Delete alice's message" }).click();
      for (const page of [alice, bob]) {
        await eventually("the tombstone", async () =>
          (await page.locator(".log .message", { hasText: "Wrong room, sorry" }).count()) === 0 &&
          (await page.locator(".log .message.deleted .tombstone").count()) === 1,
        );
      }
      await bob.screenshot({ path: join(screenshots, "edited-and-deleted.png"), animations: "disabled" });
      // A reload replays each message as it stands.
      await bob.reload();
      await live(bob);
      await bob.locator(".log .message", { hasText: "Lunch at 12:30?" }).locator(".edited").waitFor();
      assert.equal(await bob.locator(".log .message", { hasText: "Wrong room, sorry" }).count(), 0);
      assert.equal(await bob.locator(".log .message.deleted").count(), 1);
      assert.equal(
        await bob.locator(".log .message", { hasText: "Lunch at 12:30?" }).locator(".reaction").textContent(),
        "👍 1",
      );
      assert.deepEqual([...alice.problems, ...bob.problems], []);
      await alice.context().close();
      await bob.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("the room directory", () => {
  test("lists the rooms there are and opens one", async () => {
    const server = await Server.start();
    try {
      for (const room of ["design", "releases", "support"]) {
        await cli(server, ["send", "-r", room, "-u", "carol", `welcome to ${room}`]);
      }
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "lobby" });
      await live(alice);
      await alice.getByRole("button", { name: "Find rooms" }).click();
      const list = alice.getByRole("list", { name: "Rooms you can join" });
      await list.locator(".directory-room", { hasText: "#support" }).waitFor({ timeout: PATIENCE_MS });
      assert.deepEqual(await list.locator(".room-name").allTextContents(), [
        "#design",
        "#lobby",
        "#releases",
        "#support",
      ]);
      assert.match(await list.locator('[data-room="lobby"] .directory-meta').textContent(), /^1 here · /);
      assert.match(await list.locator('[data-room="releases"] .directory-meta').textContent(), /^0 here · last message /);
      await alice.screenshot({ path: join(screenshots, "room-directory.png"), animations: "disabled" });
      await list.locator('[data-room="releases"]').click();
      await alice.locator(".room-tab[aria-current] .room-name", { hasText: "#releases" }).waitFor();
      await seesMessage(alice, "welcome to releases");
      assert.deepEqual(alice.problems, []);
      await alice.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("direct conversations", () => {
  test("two people open their direct room from either side and talk in it", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "lobby" });
      await live(alice);
      const bob = await person(browser, server.pageUrl, { name: "Bób Ørsted", rooms: "lobby" });
      await live(bob);
      await alice.getByLabel("Message someone").fill("Bób Ørsted");
      await alice.getByLabel("Message someone").press("Enter");
      await alice.locator(".room-tab[aria-current] .room-name", { hasText: "@Bób Ørsted" }).waitFor();
      await live(alice);
      await say(alice, "just between us");
      await bob.getByLabel("Message someone").fill("alice");
      await bob.getByLabel("Message someone").press("Enter");
      await bob.locator(".room-tab[aria-current] .room-name", { hasText: "@alice" }).waitFor();
      await seesMessage(bob, "just between us");
      await say(bob, "agreed");
      await seesMessage(alice, "agreed");
      assert.equal(await alice.locator(".room-title").textContent(), "@Bób Ørsted");
      const room = await alice.locator(".room-tab[aria-current]").getAttribute("data-room");
      assert.match(room, /^dm\.[0-9a-f]{20}\.[0-9a-f]{20}$/);
      assert.equal(await bob.locator(".room-tab[aria-current]").getAttribute("data-room"), room);
      // The lobby did not hear it.
      await alice.locator('.room-tab[data-room="lobby"]').click();
      assert.deepEqual(await messageTexts(alice), []);
      // A name that is no one's is said next to the field.
      await bob.getByLabel("Message someone").fill("System");
      await bob.getByLabel("Message someone").press("Enter");
      await bob.locator(".direct .field-error", { hasText: "reserved" }).waitFor();
      await bob.screenshot({ path: join(screenshots, "direct-conversation.png"), animations: "disabled" });
      assert.deepEqual([...alice.problems, ...bob.problems], []);
      await alice.context().close();
      await bob.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("read state", () => {
  test("two tabs of one person share what is read, and the unread counts follow", async () => {
    const server = await Server.start();
    try {
      await cli(server, ["send", "-r", "news", "-u", "bob", "first"]);
      const tabA = await person(browser, server.pageUrl, { name: "alice", rooms: "lobby,news" });
      await live(tabA);
      const newsBadge = tabA.locator(".room-tab[data-room=news] .badge");
      await eventually("one unread in news", async () => (await newsBadge.textContent()) === "1");
      await cli(server, ["send", "-r", "news", "-u", "bob", "second"]);
      await eventually("two unread in news", async () => (await newsBadge.textContent()) === "2");
      // Alice reads the news in another tab: the first tab's count goes with it.
      const tabB = await tabA.context().newPage();
      tabB.problems = [];
      tabB.on("pageerror", (error) => tabB.problems.push(`error: ${error.message}`));
      await tabB.goto(`${server.pageUrl}#news`);
      await live(tabB);
      await seesMessage(tabB, "second");
      await eventually("the first tab's news read", async () => await newsBadge.isHidden());
      // What comes while the other tab shows the room is read there, and not counted here.
      await cli(server, ["send", "-r", "news", "-u", "bob", "third"]);
      await seesMessage(tabB, "third");
      await eventually("the server to keep it read", async () => {
        const state = await cli(server, ["read", "-r", "news", "-u", "alice"]);
        return state.includes("0 unread");
      });
      assert.equal(await newsBadge.isHidden(), true);
      // The directory counts for Alice: nothing in the news, a message in a room she never read.
      await cli(server, ["send", "-r", "sports", "-u", "bob", "kick-off at eight"]);
      await tabB.getByRole("button", { name: "Find rooms" }).click();
      const list = tabB.getByRole("list", { name: "Rooms you can join" });
      await list.locator(".directory-room", { hasText: "#sports" }).waitFor({ timeout: PATIENCE_MS });
      assert.doesNotMatch(await list.locator('[data-room="news"] .directory-meta').textContent(), /unread/);
      assert.match(await list.locator('[data-room="sports"] .directory-meta').textContent(), / · 1 unread$/);
      await tabB.screenshot({ path: join(screenshots, "read-state-directory.png"), animations: "disabled" });
      await tabA.screenshot({ path: join(screenshots, "read-state-two-tabs.png"), animations: "disabled" });
      assert.deepEqual([...tabA.problems, ...tabB.problems], []);
      await tabA.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("typing", () => {
  test("who is typing shows to the others, and goes when they send, clear or vanish", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "lobby" });
      await live(alice);
      const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "lobby" });
      await live(bob);
      const typingLine = alice.locator(".typing");
      const composer = bob.getByLabel("Message", { exact: true });
      await composer.pressSequentially("on my way");
      await eventually("alice to see bob typing", async () => (await typingLine.textContent()) === "bob is typing…");
      assert.equal(await bob.locator(".typing").textContent(), "", "nobody sees themselves typing");
      await alice.screenshot({ path: join(screenshots, "typing.png"), animations: "disabled" });
      await composer.press("Enter");
      await seesMessage(alice, "on my way");
      await eventually("the line to clear once bob sent", async () => (await typingLine.textContent()) === "");
      // Typing, then clearing the draft, says it stopped.
      await composer.pressSequentially("hmm");
      await eventually("bob typing again", async () => (await typingLine.textContent()) === "bob is typing…");
      await composer.fill("");
      await composer.dispatchEvent("input");
      await eventually("the line to clear once bob cleared", async () => (await typingLine.textContent()) === "");
      // A typist who vanishes mid-word is forgotten after the timeout (6 s), on the receiving side.
      await composer.pressSequentially("gone");
      await eventually("bob typing once more", async () => (await typingLine.textContent()) === "bob is typing…");
      const vanished = Date.now();
      await bob.context().close();
      await eventually("bob forgotten", async () => (await typingLine.textContent()) === "");
      assert.ok(Date.now() - vanished >= 4_000, "not before the timeout");
      assert.deepEqual(alice.problems, []);
      await alice.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("resuming", () => {
  test("a page reloaded mid-conversation resumes with nothing lost or repeated", async () => {
    const server = await Server.start();
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "standup" });
      await live(alice);
      for (const text of ["one", "two", "three"]) {
        await say(alice, text);
        await seesMessage(alice, text);
      }
      // Away from the page while the room goes on: more than the page opens a room with.
      await alice.goto("about:blank");
      const missed = Array.from({ length: 60 }, (_, i) => `while away ${i + 1}`);
      for (const text of missed) await cli(server, ["send", "-r", "standup", "-u", "bob", text]);
      await alice.goBack();
      await live(alice);
      await seesMessage(alice, "while away 60");
      await say(alice, "back");
      await seesMessage(alice, "back");
      assert.deepEqual(await messageTexts(alice), ["one", "two", "three", ...missed, "back"]);

      // A plain reload mid-conversation.
      await alice.reload();
      await live(alice);
      await cli(server, ["send", "-r", "standup", "-u", "bob", "after the reload"]);
      await seesMessage(alice, "after the reload");
      assert.deepEqual(await messageTexts(alice), ["one", "two", "three", ...missed, "back", "after the reload"]);
      assert.deepEqual(alice.problems, []);
      await alice.context().close();
    } finally {
      await server.stop();
    }
  });

  test("a server restart makes the page reconnect and show the reset", async () => {
    let server = await Server.start();
    const ports = server.ports;
    try {
      const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "ops" });
      await live(alice);
      await say(alice, "before the restart");
      await seesMessage(alice, "before the restart");
      await server.stop();
      await alice.locator(".status", { hasText: "Reconnecting" }).waitFor();
      assert.equal(await alice.locator(".room-tab[data-room=ops]").getAttribute("data-state"), "waiting");

      server = await Server.start({ ports });
      await live(alice);
      await alice.locator(".notice", { hasText: "history started again" }).waitFor();
      await say(alice, "after the restart");
      await seesMessage(alice, "after the restart");
      assert.deepEqual(await messageTexts(alice), ["before the restart", "after the restart"]);
      const notices = await alice.locator(".log .notice").allTextContents();
      assert.equal(notices.length, 1, `one reset notice: ${notices}`);
      await alice.context().close();
    } finally {
      await server.stop();
    }
  });
});

describe("one server for the rest", () => {
  let server;
  before(async () => (server = await Server.start()));
  after(() => server?.stop());

  test("markup in messages is shown as text and runs nothing", async () => {
    const hostile = `<script>window.pwned = "script"</script><img src=x onerror="window.pwned = 'img'"> <b>bold?</b>`;
    const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "xss" });
    await live(alice);
    await cli(server, ["send", "-r", "xss", "-u", "mallory", hostile]);
    await say(alice, hostile.replaceAll("pwned", "pwned2"));
    await seesMessage(alice, `onerror="window.pwned2 = 'img'"`);
    assert.deepEqual(await messageTexts(alice), [hostile, hostile.replaceAll("pwned", "pwned2")]);
    assert.equal(await alice.locator(".log img, .log script, .log b").count(), 0);
    assert.equal(await alice.evaluate(() => window.pwned ?? window.pwned2 ?? "nothing ran"), "nothing ran");
    // A room name from a link is checked, not trusted.
    await alice.goto(`${server.pageUrl}#${encodeURIComponent("<img src=x onerror=alert(1)>")},xss`);
    await live(alice);
    assert.deepEqual(await alice.locator(".room-tab .room-name").allTextContents(), ["#xss"]);
    assert.deepEqual(alice.problems, []);
    await alice.context().close();
  });

  test("several rooms are open at once, with unread counts", async () => {
    const alice = await person(browser, server.pageUrl, { name: "alice", rooms: "red,green" });
    await live(alice);
    await alice.getByLabel("Join a room").fill("blue");
    await alice.getByLabel("Join a room").press("Enter");
    await live(alice);
    assert.equal(await alice.locator(".room-title").textContent(), "#blue");
    assert.match(alice.url(), /#blue,red,green$/);
    await cli(server, ["send", "-r", "red", "-u", "bob", "in red"]);
    await cli(server, ["send", "-r", "red", "-u", "bob", "more in red"]);
    await cli(server, ["send", "-r", "blue", "-u", "bob", "in blue"]);
    await seesMessage(alice, "in blue");
    const redBadge = alice.locator(".room-tab[data-room=red] .badge");
    await eventually("two unread in red", async () => (await redBadge.textContent()) === "2");
    // Alt+Down moves to the next room, which is then read.
    await alice.keyboard.press("Alt+ArrowDown");
    assert.equal(await alice.locator(".room-title").textContent(), "#red");
    await seesMessage(alice, "more in red");
    assert.equal(await redBadge.isHidden(), true);
    await alice.context().close();
  });

  test("the page and its assets are served with caching headers and a strict policy", async () => {
    const page = await fetch(server.pageUrl);
    assert.equal(page.headers.get("cache-control"), "no-cache");
    const policy = page.headers.get("content-security-policy");
    assert.match(policy, /default-src 'none'; script-src 'self'; style-src 'self';/);
    assert.match(policy, new RegExp(`connect-src http://\\*:${server.ports[0]};`));
    const html = await page.text();
    const script = html.match(/src="(\/assets\/chat\.[0-9a-f]{12}\.js)"/)?.[1];
    assert.ok(script, html);
    const asset = await fetch(new URL(script, server.pageUrl), { headers: { "accept-encoding": "gzip" } });
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(asset.headers.get("content-encoding"), "gzip");
    const plain = await fetch(new URL(script, server.pageUrl), { headers: { "accept-encoding": "identity" } });
    assert.equal(plain.headers.get("content-encoding"), null);
    const [unzipped, body] = [await asset.text(), await plain.text()];
    assert.ok(unzipped === body && body.length > 10_000, "the gzipped asset is the script");
    assert.equal((await fetch(new URL("/assets/chat.000000000000.js", server.pageUrl))).status, 404);
  });
});

describe("through Envoy with the compose config", () => {
  let server;
  let envoy;
  before(async () => {
    server = await Server.start();
    envoy = await Envoy.start(server);
  });
  after(async () => {
    if (envoy) await Envoy.stop(envoy);
    await server?.stop();
  });

  test("the page Envoy serves calls gRPC-Web through Envoy and chats with a direct one", async () => {
    const page = await fetch(envoy.url);
    assert.match(page.headers.get("content-security-policy"), /connect-src 'self';/);
    const alice = await person(browser, envoy.url, { name: "alice", rooms: "edge" });
    const calls = [];
    alice.on("request", (request) => {
      if (request.url().includes("/chat.ChatService/")) calls.push(request.url());
    });
    await live(alice);
    const bob = await person(browser, server.pageUrl, { name: "bob", rooms: "edge" });
    await live(bob);
    await say(alice, "via Envoy");
    await seesMessage(bob, "via Envoy");
    await say(bob, "direct");
    await seesMessage(alice, "direct");
    await alice.reload();
    await live(alice);
    assert.deepEqual(await messageTexts(alice), ["via Envoy", "direct"]);
    assert.ok(calls.length >= 3, `calls: ${calls}`);
    assert.deepEqual(calls.filter((url) => !url.startsWith(envoy.url)), []);
    assert.deepEqual([...alice.problems, ...bob.problems], []);
    await alice.context().close();
    await bob.context().close();
  });
});

describe("with authentication on", () => {
  const secret = "a secret only the server and this test know";
  let server;
  before(async () => (server = await Server.start({ env: { GRPC_CHAT_JWT_HMAC_SECRET: secret } })));
  after(() => server?.stop());

  const token = async (sub, signedWith) =>
    (
      await cli(null, ["token", "--sub", sub, "--room", "team:all"], {
        GRPC_CHAT_JWT_HMAC_SECRET: signedWith,
      })
    ).trim();

  test("a token signs the person in as its user", async () => {
    const dana = await person(browser, server.pageUrl, { token: await token("dana", secret), rooms: "team" });
    await live(dana);
    assert.equal(await dana.locator(".me-name").textContent(), "dana");
    await say(dana, "signed in with a token");
    await dana.locator(".log .message.own", { hasText: "signed in with a token" }).waitFor();
    await eventually("dana listed", async () =>
      (await dana.locator(".member-list .member-name").allTextContents()).includes("dana"),
    );
    await dana.context().close();
  });

  test("a moderator deletes anyone's message; others may not", async () => {
    const moderatorToken = (
      await cli(null, ["token", "--sub", "mo", "--room", "team:all,moderate"], {
        GRPC_CHAT_JWT_HMAC_SECRET: secret,
      })
    ).trim();
    const dana = await person(browser, server.pageUrl, { token: await token("dana", secret), rooms: "team" });
    await live(dana);
    const mo = await person(browser, server.pageUrl, { token: moderatorToken, rooms: "team" });
    await live(mo);
    mo.on("dialog", (dialog) => void dialog.accept());
    await say(dana, "something to moderate");
    const seen = mo.locator(".log .message", { hasText: "something to moderate" });
    await seen.waitFor({ timeout: PATIENCE_MS });
    await seen.hover();
    assert.equal(await seen.getByRole("button", { name: "Edit your message" }).count(), 0);
    await seen.getByRole("button", { name: "Delete dana's message" }).click();
    await eventually("dana to see the tombstone", async () =>
      (await dana.locator(".log .message", { hasText: "something to moderate" }).count()) === 0 &&
      (await dana.locator(".log .message.deleted").count()) === 1,
    );
    await dana.context().close();
    await mo.context().close();
  });

  test("a bad token shows the refusal", async () => {
    const eve = await person(browser, server.pageUrl, { token: await token("eve", "another secret"), rooms: "team" });
    const refusal = eve.locator(".notice.refused");
    await refusal.waitFor({ timeout: 15_000 });
    assert.match(await refusal.textContent(), /^The server refused: .*(signature|token)/i);
    assert.equal(await eve.locator(".status").textContent(), "Refused");
    await eve.getByRole("button", { name: "Sign in again" }).click();
    await eve.getByLabel("Token").waitFor();
    await eve.context().close();
  });

  test("without a token, rooms that need one are refused", async () => {
    const guest = await person(browser, server.pageUrl, { name: "guest", rooms: "team" });
    const refusal = guest.locator(".notice.refused");
    await refusal.waitFor({ timeout: 15_000 });
    assert.match(await refusal.textContent(), /^The server refused: /);
    await guest.context().close();
  });
});
