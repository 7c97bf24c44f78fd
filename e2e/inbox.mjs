// End-to-end checks of the web inbox of `flowrt serve`, in headless Chromium.
//
// A plain Node script (no test runner): runtime/tests/inbox_e2e.rs starts a server, opens the
// gates and runs it; it can also be run by hand against any server that has the gates open:
//
//   BASE_URL=http://127.0.0.1:8080 REVIEWER_TOKEN=flow_… OUTSIDER_TOKEN=flow_… \
//   APPROVAL_RUN=RUN_ID INPUT_RUN=RUN_ID node e2e/inbox.mjs
//
// Environment:
//   BASE_URL          the server (required)
//   REVIEWER_TOKEN    a user who may decide the approval gate of APPROVAL_RUN (required)
//   AGENT_TOKEN       a user who may answer the input gate of INPUT_RUN (default REVIEWER_TOKEN)
//   OUTSIDER_TOKEN    a user who may decide neither gate nor read APPROVAL_RUN (required)
//   READER_TOKEN      a user who may read APPROVAL_RUN (a `readers` role) but not decide it
//                     (optional: that part of check c is skipped without)
//   STARTER_TOKEN     a user who may start START_WORKFLOW (optional: check e is skipped without)
//   APPROVAL_RUN      a run waiting at an approval gate (required)
//   INPUT_RUN         a run waiting at an `await input<Review>` gate (required) whose workflow
//                     catches its timeout, where
//                     Review = { body: String, escalate: Bool, tags: List<String>,
//                                priority: Priority (enum Low | Normal | High), minutes: Int?,
//                                follow_up: Time? }
//   QUORUM_RUN        a run waiting at an approval gate with quorum 2 that REVIEWER_TOKEN and
//                     SECOND_REVIEWER_TOKEN may decide, with an escalation and a timeout, whose
//                     result is an enum with a variant `Paid` (optional: check f is skipped without)
//   SECOND_REVIEWER_TOKEN  the second reviewer of QUORUM_RUN
//   CONTEXT_ORDER     JSON: the order in which the approval card of APPROVAL_RUN must show the
//                     fields of its context, by path ("" the context, "a.b" a nested record),
//                     e.g. {"": ["zeta", "alpha", "mid"], "mid": ["order", "checked"]}
//                     (optional: that part of check a is skipped without)
//   START_WORKFLOW    a workflow whose input is one record `o: { id: String, amount_eur: Int,
//                     lines: List<{ item: String, qty: Int }>, note: String? }` of a type named
//                     Order, then `pin: Secret?` (check e)
//   SIGNAL_RUN        a run waiting for signal `cancel` (a record `{ reason: String, refund:
//                     Bool }`) that AGENT_TOKEN may send and read, whose workflow also accepts
//                     `renewed` from a system only; it completes with the reason in its output
//                     (optional: check g is skipped without)
//   PARALLEL_RUN      a run at a `parallel` whose two branches wait at approval gates that
//                     REVIEWER_TOKEN may decide, started by STARTER_TOKEN (optional: check h
//                     is skipped without)
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   E2E_SCREENSHOTS=1 save docs/inbox.png, docs/inbox-phone.png and docs/run.png
//   SCREENSHOT_DIR    where to save them (default: the repository's docs/)
//   E2E_ARTIFACTS     where to save a screenshot and the page text of a failed check
//                     (default: the system's temporary directory)
//
// Exit status 0 when every check passed; 1 with a message naming the failed check.

import { chromium } from "playwright-core";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;

function need(name) {
  const value = env[name];
  if (!value) {
    console.error(`error: the environment variable ${name} is required (see the top of e2e/inbox.mjs)`);
    process.exit(2);
  }
  return value;
}

const BASE = need("BASE_URL").replace(/\/+$/, "");
const REVIEWER = need("REVIEWER_TOKEN");
const AGENT = env.AGENT_TOKEN || REVIEWER;
const OUTSIDER = need("OUTSIDER_TOKEN");
const STARTER = env.STARTER_TOKEN || "";
const READER = env.READER_TOKEN || "";
const APPROVAL_RUN = need("APPROVAL_RUN");
const INPUT_RUN = need("INPUT_RUN");
const START_WORKFLOW = env.START_WORKFLOW || "";
const QUORUM_RUN = env.QUORUM_RUN || "";
const SIGNAL_RUN = env.SIGNAL_RUN || "";
const PARALLEL_RUN = env.PARALLEL_RUN || "";
const SECOND = env.SECOND_REVIEWER_TOKEN || "";
const CONTEXT_ORDER = env.CONTEXT_ORDER ? JSON.parse(env.CONTEXT_ORDER) : null;
const CHROMIUM = env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = env.E2E_SCREENSHOTS === "1";
const SHOT_DIR = env.SCREENSHOT_DIR || path.join(here, "..", "docs");
const ARTIFACTS = env.E2E_ARTIFACTS || tmpdir();
const TIMEOUT = 15000;

if (!existsSync(CHROMIUM)) {
  console.error(
    `error: Chromium is not at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM to its path`
  );
  process.exit(1);
}

class CheckFailed extends Error {}
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

/** The API, straight (to check what the page did). */
async function api(token, method, p, body) {
  const response = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  return { status: response.status, data };
}

async function waitFor(what, fn, timeout = TIMEOUT) {
  const until = Date.now() + timeout;
  let last;
  while (Date.now() < until) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new CheckFailed(`timed out after ${timeout} ms waiting for ${what}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

const pageErrors = [];

/** A new tab (its own session storage) signed in with `token`. */
async function signIn(token, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(`${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) pageErrors.push(m.text());
  });
  await page.goto(`${BASE}/#/inbox`);
  await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who-text").filter({ hasText: "Signed in as" }).waitFor();
  await page.getByRole("heading", { level: 1, name: "Inbox" }).waitFor();
  return page;
}

async function me(token) {
  const r = await api(token, "GET", "/api/me");
  check(r.status === 200, `GET /api/me answered ${r.status}: ${JSON.stringify(r.data)}`);
  return r.data;
}

function card(page, run) {
  return page.locator(`article.decision[data-run="${run}"]`);
}

/** The field names a card's context table shows, in order, by path: "" for the context's
 * own rows, "a.b" for the rows of the record nested in field b of field a. */
async function contextFields(gateCard) {
  return gateCard.locator("section.context").evaluate((section) => {
    const out = {};
    const walk = (table, path) => {
      const rows = Array.from(table.tBodies[0] ? table.tBodies[0].rows : []);
      out[path] = rows.map((row) => row.cells[0].textContent);
      for (const row of rows) {
        const nested = row.cells[1] && row.cells[1].querySelector(":scope > table.kv");
        const name = row.cells[0].textContent;
        if (nested) walk(nested, path ? `${path}.${name}` : name);
      }
    };
    const top = section.querySelector("table.kv");
    if (top) walk(top, "");
    return out;
  });
}

async function noHorizontalScroll(page, where) {
  const m = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
    inner: window.innerWidth,
    body: document.body.scrollWidth,
  }));
  check(
    m.scroll <= m.client && m.body <= m.client,
    `${where}: the page scrolls horizontally at ${m.inner}px (document ${m.scroll}px, body ${m.body}px wide, viewport ${m.client}px)`
  );
}

async function screenshot(page, name, fullPage = true) {
  if (!SHOTS) return;
  mkdirSync(SHOT_DIR, { recursive: true });
  const file = path.join(SHOT_DIR, name);
  await page.screenshot({ path: file, fullPage });
  console.log(`  saved ${path.relative(process.cwd(), file) || file}`);
}

/** Fails when a form control has no label or a button no name. */
async function unlabelled(page, where) {
  const bad = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll("input, select, textarea")) {
      const named = (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
      if (!named) out.push(el.outerHTML.slice(0, 120));
    }
    for (const el of document.querySelectorAll("button, a[href]")) {
      if (!(el.getAttribute("aria-label") || el.textContent.trim())) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  });
  check(bad.length === 0, `${where}: controls without a label or name:\n     ${bad.join("\n     ")}`);
}

/** Fills the start form of START_WORKFLOW (an Order). */
async function fillOrder(page, id) {
  await page.getByRole("textbox", { name: "Id", exact: true }).fill(id);
  await page.getByRole("textbox", { name: "Amount eur", exact: true }).fill("1200");
  await page.getByRole("button", { name: "Add to Lines" }).click();
  await page.getByRole("textbox", { name: "Item", exact: true }).fill("pallet");
  await page.getByRole("textbox", { name: "Qty", exact: true }).fill("3");
}

const gates = {};

const checks = [
  [
    "the gates are open (set-up)",
    async () => {
      const reviewer = await api(REVIEWER, "GET", "/api/decisions");
      check(reviewer.status === 200, `GET /api/decisions answered ${reviewer.status}`);
      gates.approval = reviewer.data.find((d) => d.run === APPROVAL_RUN);
      check(gates.approval, `run ${APPROVAL_RUN} is not in the reviewer's decisions: ${JSON.stringify(reviewer.data)}`);
      check(gates.approval.kind === "approval", `the gate of ${APPROVAL_RUN} is a ${gates.approval.kind}, not an approval`);
      const agent = await api(AGENT, "GET", "/api/decisions");
      gates.input = agent.data.find((d) => d.run === INPUT_RUN);
      check(gates.input, `run ${INPUT_RUN} is not in the agent's decisions: ${JSON.stringify(agent.data)}`);
      check(gates.input.kind === "input", `the gate of ${INPUT_RUN} is a ${gates.input.kind}, not an input`);
    },
  ],
  [
    "c) a reviewer without the role does not see the gates nor the run, a reader cannot decide on the run page, and a refusal (403) is shown",
    async () => {
      const who = await me(OUTSIDER);
      const page = await signIn(OUTSIDER);
      await page.locator("#inbox-count").filter({ hasText: /waiting for you/ }).waitFor();
      check((await card(page, APPROVAL_RUN).count()) === 0, `${who.user} sees the approval gate of ${APPROVAL_RUN} in the inbox`);
      check((await card(page, INPUT_RUN).count()) === 0, `${who.user} sees the input gate of ${INPUT_RUN} in the inbox`);
      // The run page of a run this user may not read shows the server's refusal, nothing of
      // the run, and the runs list does not list it.
      await page.goto(`${BASE}/#/runs/${APPROVAL_RUN}`);
      await page.getByRole("heading", { level: 1, name: "Not allowed" }).waitFor();
      const refusal = await page.locator(".error-box").first().textContent();
      check(refusal.includes(`${who.user} may not read run ${APPROVAL_RUN}`), `the refusal does not say why: ${refusal}`);
      check((await card(page, APPROVAL_RUN).count()) === 0, `${who.user} is shown the gate of a run they may not read`);
      const shown = await page.locator("main").innerText();
      check(!shown.includes("O-1001") && !shown.includes("Timeline"), `${who.user} is shown the run: ${shown}`);
      await page.goto(`${BASE}/#/runs`);
      await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor();
      check(
        (await page.locator(`a[href="#/runs/${encodeURIComponent(APPROVAL_RUN)}"]`).count()) === 0,
        `${who.user} sees run ${APPROVAL_RUN} in the runs list`
      );
      // A reader of the workflow sees the run page with its gate, is told they cannot decide
      // it, and is offered no buttons.
      if (READER) {
        const reader = await me(READER);
        const readerPage = await signIn(READER);
        await readerPage.goto(`${BASE}/#/runs/${APPROVAL_RUN}`);
        await readerPage.getByRole("heading", { level: 1, name: `Run ${APPROVAL_RUN}` }).waitFor();
        const gateCard = card(readerPage, APPROVAL_RUN);
        await gateCard.locator(".cannot-decide").filter({ hasText: "You cannot decide this gate" }).waitFor();
        check((await gateCard.getByRole("button").count()) === 0, `${reader.user} is offered buttons at a gate they may not decide`);
        await readerPage.context().close();
      }
      // A refusal from the server (403) is shown with its message: starting a workflow the
      // user may not start.
      if (START_WORKFLOW) {
        await page.goto(`${BASE}/#/start/${START_WORKFLOW}`);
        await page.getByRole("heading", { level: 1, name: `Start ${START_WORKFLOW}` }).waitFor();
        await fillOrder(page, "O-403");
        await page.getByRole("button", { name: "Start the run" }).click();
        const error = page.locator(".start-form .form-error");
        await error.filter({ hasText: /Not allowed/ }).waitFor();
        const text = await error.textContent();
        check(text.includes(`${who.user} may not start`), `the refusal does not show the server's message: ${text}`);
      }
      const run = await api(REVIEWER, "GET", `/api/runs/${APPROVAL_RUN}`);
      check(run.data && run.data.status === "waiting", `run ${APPROVAL_RUN} is ${run.data && run.data.status} after the refused approval`);
      await page.context().close();
    },
  ],
  [
    "d) at 375px the inbox, the run page and the start page do not scroll horizontally",
    async () => {
      const page = await signIn(REVIEWER, { width: 375, height: 812 });
      await card(page, APPROVAL_RUN).waitFor();
      await noHorizontalScroll(page, "the inbox");
      await screenshot(page, "inbox-phone.png");
      await page.goto(`${BASE}/#/runs/${APPROVAL_RUN}`);
      await page.getByRole("heading", { name: "Timeline" }).waitFor();
      await noHorizontalScroll(page, "the run page");
      await page.goto(`${BASE}/#/runs`);
      await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor();
      await noHorizontalScroll(page, "the runs list");
      await page.goto(`${BASE}/#/start`);
      await page.getByRole("heading", { level: 1, name: "Start a run" }).waitFor();
      await noHorizontalScroll(page, "the workflows list");
      await page.context().close();
    },
  ],
  [
    "a) a reviewer approves with a comment and the run completes",
    async () => {
      const who = await me(REVIEWER);
      const page = await signIn(REVIEWER);
      const gateCard = card(page, APPROVAL_RUN);
      await gateCard.waitFor();
      const cardText = await gateCard.textContent();
      if (gates.approval.prompt) {
        check(cardText.includes(gates.approval.prompt), `the card does not show the prompt ${JSON.stringify(gates.approval.prompt)}:\n${cardText}`);
      }
      check(/Deadline/.test(cardText) && /Approvers/.test(cardText), `the card does not show the deadline and approvers:\n${cardText}`);
      check((await gateCard.locator(".context table").count()) > 0, "the context is not rendered as a table");
      // The context's fields in the order the workflow wrote or declared them (the server
      // sends them sorted, as JSON; the order is the gate's `context_schema`), nested too.
      if (CONTEXT_ORDER) {
        check(gates.approval.context_schema, `the gate of ${APPROVAL_RUN} has no context_schema: ${JSON.stringify(gates.approval)}`);
        const shown = await contextFields(gateCard);
        for (const [where, want] of Object.entries(CONTEXT_ORDER)) {
          check(
            JSON.stringify(shown[where]) === JSON.stringify(want),
            `the context${where ? ` field ${where}` : ""} shows ${JSON.stringify(shown[where])}, not ${JSON.stringify(want)} (all: ${JSON.stringify(shown)})`
          );
        }
      }
      await unlabelled(page, "the inbox");
      await screenshot(page, "inbox.png");
      // Rejecting needs a comment: the page says so and sends nothing.
      await gateCard.getByRole("button", { name: "Reject" }).click();
      await gateCard.locator(".field-error").filter({ hasText: /comment is required/ }).waitFor();
      const still = await api(REVIEWER, "GET", `/api/runs/${APPROVAL_RUN}`);
      check(still.data.status === "waiting", `the run moved on after a reject without comment: ${still.data.status}`);
      // Approve with a comment, from the keyboard.
      const comment = `Documents verified by ${who.user} in the browser`;
      await gateCard.getByLabel("Comment").fill(comment);
      await gateCard.getByRole("button", { name: "Approve" }).focus();
      await page.keyboard.press("Enter");
      await page.locator("#status").filter({ hasText: /Approved/ }).waitFor();
      await waitFor("the card to leave the inbox", async () => (await gateCard.count()) === 0);
      // The run page shows the run completed (it was driven at once, or by the worker soon).
      await page.goto(`${BASE}/#/runs/${APPROVAL_RUN}`);
      await waitFor(`run ${APPROVAL_RUN} to complete on its page`, async () => {
        const status = (await page.locator("#run-status").textContent().catch(() => "")) || "";
        if (/completed/.test(status)) return true;
        if (/failed|cancelled/.test(status)) throw new CheckFailed(`run ${APPROVAL_RUN} is ${status}`);
        await page.reload();
        await page.locator("#run-status").waitFor();
        return false;
      });
      await page.getByRole("heading", { name: "Output" }).waitFor();
      // The comment is in the run's history.
      const history = await api(REVIEWER, "GET", `/api/runs/${APPROVAL_RUN}/history`);
      check(history.status === 200, `GET …/history answered ${history.status}`);
      const decided = history.data.find((e) => (e.kind || e.event) === "gate_decided");
      check(decided, `no gate_decided event in the history: ${JSON.stringify(history.data.map((e) => e.kind || e.event))}`);
      check(JSON.stringify(decided.data).includes(comment), `the decision does not hold the comment: ${JSON.stringify(decided.data)}`);
      // The timeline and the audit trail are on the page.
      await page.locator("table.timeline").getByText("gate_decided").first().waitFor();
      await page.locator("#audit-verdict").filter({ hasText: /verifies/ }).waitFor();
      await screenshot(page, "run.png");
      await page.context().close();
    },
  ],
  [
    "b) an input form for a record is validated in the page, submitted, and the run goes on",
    async () => {
      const page = await signIn(AGENT);
      const gateCard = card(page, INPUT_RUN);
      await gateCard.waitFor();
      // Its workflow catches the timeout, and the card says so.
      const deadline = await gateCard.textContent();
      check(/At the deadline\s*the gate times out: the workflow catches the ApprovalTimeout/.test(deadline), `the input card does not say the timeout is caught:\n${deadline}`);
      // The fields in declaration order: body, escalate, tags, priority, minutes, follow_up.
      const labels = (await gateCard.locator("form label, form legend").allInnerTexts()).map((l) => l.trim());
      const wanted = ["Body", "Escalate", "Tags", "Priority", "Minutes", "Follow up"];
      const at = wanted.map((name) => labels.findIndex((l) => l.startsWith(name)));
      check(at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1])), `the input form's fields are not in declaration order: ${JSON.stringify(labels)}`);
      // The `///` docs of the fields are their help text, tied to the control (read out by a
      // screen reader with it); a field without a doc keeps the type's own hint.
      for (const [label, doc] of [
        ["Body", "What the customer is told."],
        ["Priority", "How soon the team must look at it."],
        ["Minutes", "Minutes spent on the ticket so far."],
      ]) {
        const control = gateCard.getByLabel(label, { exact: false }).first();
        const ids = ((await control.getAttribute("aria-describedby")) || "").split(/\s+/).filter(Boolean);
        const described = [];
        for (const id of ids) described.push(((await gateCard.locator(`[id="${id}"]`).textContent()) || "").trim());
        check(described.includes(doc), `${label}'s help text is not its doc ${JSON.stringify(doc)}: ${JSON.stringify(described)}`);
      }
      check(
        (await gateCard.locator(".hint").filter({ hasText: "What the customer is told." }).count()) === 1,
        "the doc of Body is shown once"
      );
      // Nothing filled in: the page names the required fields and sends nothing.
      await gateCard.getByRole("button", { name: "Submit" }).click();
      await gateCard.locator(".field-error").filter({ hasText: "Body is required." }).waitFor();
      await gateCard.locator(".field-error").filter({ hasText: "Choose a value for Priority." }).waitFor();
      check(
        (await gateCard.locator(".field-error").filter({ hasText: /Minutes/ }).count()) === 0,
        "the optional field Minutes is reported as missing"
      );
      // A whole number is checked in the page.
      await gateCard.getByLabel("Minutes").fill("twelve");
      await gateCard.getByRole("button", { name: "Submit" }).click();
      await gateCard.locator(".field-error").filter({ hasText: "Minutes must be a whole number." }).waitFor();
      const still = await api(AGENT, "GET", `/api/runs/${INPUT_RUN}`);
      check(still.data.status === "waiting", `the run moved on after an invalid form: ${still.data.status}`);
      // Fill it in properly: a textarea, a checkbox, a list with add/remove, an enum, an Int?.
      await gateCard.getByLabel("Body").fill("Fixed in 2.4.1, please update.");
      await gateCard.getByLabel("Escalate").check();
      const add = gateCard.getByRole("button", { name: "Add to Tags" });
      await add.click();
      await gateCard.getByRole("textbox", { name: "Tags item 1", exact: true }).fill("csv");
      await add.click();
      await gateCard.getByRole("textbox", { name: "Tags item 2", exact: true }).fill("wrong");
      await add.click();
      await gateCard.getByRole("textbox", { name: "Tags item 3", exact: true }).fill("export");
      await gateCard.getByRole("button", { name: "Remove Tags item 2" }).click();
      check((await gateCard.getByRole("textbox", { name: "Tags item 3", exact: true }).count()) === 0, "the removed item is still there");
      check((await gateCard.getByRole("textbox", { name: "Tags item 2", exact: true }).inputValue()) === "export", "the items were not renumbered after a removal");
      await gateCard.getByLabel("Priority").selectOption("High");
      await gateCard.getByLabel("Minutes").fill("25");
      // A time the page cannot check: the server refuses it (422) and its problem is shown
      // next to the field, with the server's message above the form.
      await gateCard.getByLabel("Follow up").fill("next week");
      await gateCard.getByRole("button", { name: "Submit" }).click();
      await gateCard.locator(".form-error").filter({ hasText: /Invalid input/ }).waitFor();
      const followUp = gateCard.getByRole("textbox", { name: "Follow up" });
      await waitFor("the server's problem next to the Follow up field", async () => (await followUp.getAttribute("aria-invalid")) === "true");
      const problem = await gateCard.locator(".field-error:not([hidden])").allTextContents();
      check(problem.length === 1 && problem[0].length > 0, `expected one problem next to Follow up, found ${JSON.stringify(problem)}`);
      const refused = await api(AGENT, "GET", `/api/runs/${INPUT_RUN}`);
      check(refused.data.status === "waiting", `the run moved on after the server refused the value: ${refused.data.status}`);
      await followUp.fill("");
      await gateCard.getByRole("button", { name: "Submit" }).click();
      await page.locator("#status").filter({ hasText: /Submitted/ }).waitFor();
      await waitFor("the input card to leave the inbox", async () => (await gateCard.count()) === 0);
      const run = await waitFor(`run ${INPUT_RUN} to go on`, async () => {
        const r = await api(AGENT, "GET", `/api/runs/${INPUT_RUN}`);
        return r.data && r.data.status !== "waiting" && r.data.status !== "runnable" ? r.data : null;
      });
      check(run.status === "completed", `run ${INPUT_RUN} is ${run.status}: ${JSON.stringify(run.error)}`);
      const output = JSON.stringify(run.output);
      for (const part of ["Fixed in 2.4.1", "csv,export", "High", "25", "true"]) {
        check(output.includes(part), `the run's output does not hold ${part} from the form: ${output}`);
      }
      await page.context().close();
    },
  ],
  [
    "f) a quorum of two: the first reviewer sees the plan and why, is told she already approved; the second sees her decision; the runs page shows the outcome",
    async () => {
      if (!QUORUM_RUN || !SECOND) return "skipped (no QUORUM_RUN or SECOND_REVIEWER_TOKEN)";
      const first = await me(REVIEWER);
      const page = await signIn(REVIEWER);
      const gateCard = card(page, QUORUM_RUN);
      await gateCard.waitFor();
      const text = await gateCard.textContent();
      check(/Approvals needed\s*2 more of 2/.test(text), `the card does not say 2 of 2 approvals are needed:\n${text}`);
      check(/Escalation\s*to role ops_manager at /.test(text), `the card does not show the escalation plan:\n${text}`);
      check(!/not escalated/.test(text), `the card still says only "not escalated":\n${text}`);
      check(/At the deadline\s*the gate times out: the run fails with ApprovalTimeout \(the workflow does not catch it\)/.test(text), `the card does not say what happens at the deadline:\n${text}`);
      await gateCard.locator("details.gate-options summary").click();
      const options = await gateCard.locator("details.gate-options").innerText();
      check(/Quorum\s*2/i.test(options), `the evaluated options do not show quorum 2:\n${options}`);
      check((await gateCard.locator(".earlier-decisions").count()) === 0, "the first reviewer is shown earlier decisions");
      const comment = `Refund checked by ${first.user}`;
      await gateCard.getByLabel("Comment").fill(comment);
      await gateCard.getByRole("button", { name: "Approve" }).click();
      await page.locator("#status").filter({ hasText: "1 more approval is needed" }).waitFor();
      await waitFor("the quorum card to leave the first reviewer's inbox", async () => (await gateCard.count()) === 0);
      // Her run page tells the true reason she cannot decide again.
      await page.goto(`${BASE}/#/runs/${QUORUM_RUN}`);
      const why = card(page, QUORUM_RUN).locator(".cannot-decide");
      await why.waitFor();
      const reason = await why.innerText();
      check(
        reason === "You already approved this gate; 1 more approval from another reviewer is needed.",
        `the run page gives the wrong reason: ${reason}`
      );
      await card(page, QUORUM_RUN).locator(".earlier-decisions").filter({ hasText: comment }).waitFor();
      await page.context().close();

      // The second reviewer sees who approved, when, and the comment, over the API and on the card.
      const listed = await api(SECOND, "GET", "/api/decisions");
      const gate = listed.data.find((d) => d.run === QUORUM_RUN);
      check(gate, `run ${QUORUM_RUN} is not in the second reviewer's decisions`);
      check(
        gate.decisions.length === 1 && gate.decisions[0].by === first.user && gate.decisions[0].comment === comment && gate.decisions[0].at > 0,
        `/api/decisions does not hold the first decision: ${JSON.stringify(gate.decisions)}`
      );
      const second = await signIn(SECOND);
      const secondCard = card(second, QUORUM_RUN);
      await secondCard.waitFor();
      const earlier = await secondCard.locator(".earlier-decisions").innerText();
      check(earlier.includes(`Approved by ${first.user}`) && earlier.includes(comment), `the card does not show the first decision:\n${earlier}`);
      check((await secondCard.locator(".earlier-decisions time").count()) === 1, "the first decision has no time");
      check(/Approvals needed\s*1 more of 2/.test(await secondCard.textContent()), "the second card does not say 1 of 2");
      await secondCard.getByRole("button", { name: "Approve" }).click();
      await second.locator("#status").filter({ hasText: /Approved/ }).waitFor();
      await waitFor(`run ${QUORUM_RUN} to complete`, async () => {
        const r = await api(SECOND, "GET", `/api/runs/${QUORUM_RUN}`);
        return r.data && r.data.status === "completed";
      });
      // The runs page shows the outcome (the variant), not only "completed".
      await second.goto(`${BASE}/#/runs?workflow=refund`);
      const row = second.locator("table.runs tbody tr").filter({ has: second.locator(`a[href="#/runs/${QUORUM_RUN}"]`) });
      await row.waitFor();
      const outcome = await row.locator("td.outcome").innerText();
      check(outcome === "Paid", `the runs page shows the outcome ${JSON.stringify(outcome)}, not Paid`);
      const icon = await fetch(`${BASE}/favicon.ico`);
      check(icon.status === 200 && /svg/.test(icon.headers.get("content-type") || ""), `GET /favicon.ico answered ${icon.status}`);
      await second.context().close();
      return `run ${QUORUM_RUN}`;
    },
  ],
  [
    "g) a run's page offers the signals the user may send, as a form of the signal's type, and says who may send the others",
    async () => {
      if (!SIGNAL_RUN) return "skipped (no SIGNAL_RUN)";
      const page = await signIn(AGENT);
      await page.goto(`${BASE}/#/runs/${encodeURIComponent(SIGNAL_RUN)}`);
      const section = page.locator("section.signals");
      await section.waitFor();
      await unlabelled(page, "the signal forms");
      const renewed = section.locator('li.signal[data-signal="renewed"]');
      check(/Only system\("billing"\) may send it/.test(await renewed.innerText()), `renewed does not say who may send it:\n${await renewed.innerText()}`);
      check((await renewed.locator("form").count()) === 0, "a signal the user may not send has a form");
      const cancel = section.locator('form.signal-form[data-signal="cancel"]');
      // Nothing filled in: the page names the required field and sends nothing.
      await cancel.getByRole("button", { name: "Send cancel" }).click();
      await cancel.locator(".field-error").filter({ hasText: "Reason is required." }).waitFor();
      const still = await api(AGENT, "GET", `/api/runs/${SIGNAL_RUN}`);
      check(still.data.status === "waiting", `the run moved on after an invalid signal form: ${still.data.status}`);
      await cancel.getByLabel("Reason").fill("moving abroad");
      await cancel.getByLabel("Refund").check();
      await cancel.getByRole("button", { name: "Send cancel" }).click();
      await page.locator("#status").filter({ hasText: /Signal cancel #1 sent: taken by the run/ }).waitFor();
      await page.locator("#run-status").filter({ hasText: "completed" }).waitFor();
      check((await page.locator("section.signals").count()) === 0, "a finished run still offers signals");
      const run = await api(AGENT, "GET", `/api/runs/${SIGNAL_RUN}`);
      const output = JSON.stringify(run.data.output);
      check(output.includes("moving abroad") && output.includes("true"), `the run's output is not the signal's value: ${output}`);
      const history = await api(AGENT, "GET", `/api/runs/${SIGNAL_RUN}/history`);
      const received = history.data.filter((e) => e.kind === "signal_received");
      check(received.length === 1 && received[0].data.by === (await me(AGENT)).user, `the history does not hold one signal from the agent: ${JSON.stringify(received)}`);
      await page.context().close();
      return `run ${SIGNAL_RUN}`;
    },
  ],
  [
    "h) the gates of a parallel's branches are in the inbox side by side; once both are approved the run completes, and its timeline links each branch's run",
    async () => {
      if (!PARALLEL_RUN || !STARTER) return "skipped (no PARALLEL_RUN or STARTER_TOKEN)";
      const decisions = await api(REVIEWER, "GET", "/api/decisions");
      const branchGates = decisions.data.filter((d) => d.run.startsWith(`${PARALLEL_RUN}.`));
      check(branchGates.length === 2, `the reviewer does not have the two branch gates of ${PARALLEL_RUN}: ${JSON.stringify(decisions.data.map((d) => [d.run, d.gate]))}`);
      const parent = await api(STARTER, "GET", `/api/runs/${PARALLEL_RUN}`);
      check(parent.data.waiting_on === "branches 2 of 2", `run ${PARALLEL_RUN} waits on ${JSON.stringify(parent.data.waiting_on)}, not its two branches`);
      const page = await signIn(REVIEWER);
      const cards = branchGates.map((g) => card(page, g.run));
      // Both at once: each branch waits on its own.
      for (const c of cards) await c.waitFor();
      for (const c of cards) {
        await c.getByRole("button", { name: "Approve" }).click();
        await waitFor("the branch's card to leave the inbox", async () => (await c.count()) === 0);
      }
      await waitFor(`run ${PARALLEL_RUN} to complete`, async () => (await api(STARTER, "GET", `/api/runs/${PARALLEL_RUN}`)).data.status === "completed");
      const done = await api(STARTER, "GET", `/api/runs/${PARALLEL_RUN}`);
      check(JSON.stringify(done.data.output).includes("legal true, finance true"), `the run's output is not both decisions: ${JSON.stringify(done.data.output)}`);
      await page.context().close();
      const starter = await signIn(STARTER);
      await starter.goto(`${BASE}/#/runs/${encodeURIComponent(PARALLEL_RUN)}`);
      await starter.locator("#run-status").filter({ hasText: "completed" }).waitFor();
      const links = await starter.locator("table.timeline a.branch-run").allInnerTexts();
      for (const g of branchGates) {
        check(links.includes(g.run), `the timeline does not link branch run ${g.run}: ${JSON.stringify(links)}`);
      }
      await starter.context().close();
      return `run ${PARALLEL_RUN}, branches ${branchGates.map((g) => g.run).join(", ")}`;
    },
  ],
  [
    "e) a run is started from the form generated from the workflow's input schema, then cancelled; sign out",
    async () => {
      if (!STARTER || !START_WORKFLOW) return "skipped (no STARTER_TOKEN or START_WORKFLOW)";
      const page = await signIn(STARTER);
      await page.getByRole("link", { name: "Start a run" }).click();
      await page.getByRole("link", { name: `Start ${START_WORKFLOW}` }).click();
      await page.getByRole("heading", { level: 1, name: `Start ${START_WORKFLOW}` }).waitFor();
      await unlabelled(page, "the start form");
      // The fields in declaration order (not alphabetical), the group named by its type, the
      // Secret a password input.
      const labels = await page.locator(".start-form label").allInnerTexts();
      const order = ["Id", "Amount eur", "Note", "Pin"].map((name) => labels.findIndex((l) => l.trim().startsWith(name)));
      check(order.every((i, n) => i >= 0 && (n === 0 || i > order[n - 1])), `the start form's fields are not in declaration order: ${JSON.stringify(labels)}`);
      const legend = await page.locator(".start-form fieldset.record legend").first().innerText();
      check(legend.trim() === "Order", `the record's group is labelled ${JSON.stringify(legend)}, not by its type Order`);
      const pin = page.getByLabel("Pin");
      check((await pin.getAttribute("type")) === "password", `the Secret field Pin is a ${await pin.getAttribute("type")} input`);
      await fillOrder(page, "O-77");
      await page.getByRole("button", { name: "Start the run" }).click();
      await page.getByRole("heading", { level: 1, name: /^Run / }).waitFor();
      const id = (await page.getByRole("heading", { level: 1 }).innerText()).replace(/^Run /, "").trim();
      const run = await api(STARTER, "GET", `/api/runs/${encodeURIComponent(id)}`);
      check(run.status === 200, `the new run ${id} cannot be read: ${run.status}`);
      const input = JSON.stringify(run.data.input);
      check(input.includes("O-77") && input.includes("pallet") && input.includes("1200"), `the run's input is not the form's: ${input}`);
      check(run.data.workflow === START_WORKFLOW, `the new run is of ${run.data.workflow}`);
      // Its starter cancels it from its page (with a confirmation).
      await page.getByRole("button", { name: "Cancel run" }).click();
      await page.getByRole("button", { name: "Yes, cancel the run" }).click();
      await page.locator("#run-status").filter({ hasText: "cancelled" }).waitFor();
      const cancelled = await api(STARTER, "GET", `/api/runs/${encodeURIComponent(id)}`);
      check(cancelled.data.status === "cancelled", `run ${id} is ${cancelled.data.status} after Cancel run`);
      check((await page.getByRole("button", { name: "Cancel run" }).count()) === 0, "a cancelled run still offers Cancel run");
      // Signing out forgets the token.
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
      const kept = await page.evaluate(() => sessionStorage.length);
      check(kept === 0, `the session storage still holds ${kept} item(s) after signing out`);
      await page.context().close();
      return `run ${id}, then cancelled`;
    },
  ],
];

let passed = 0;
let failed = 0;
for (const [name, fn] of checks) {
  const started = Date.now();
  try {
    const note = await fn();
    passed += 1;
    console.log(`ok   ${name}${note ? ` — ${note}` : ""} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.error(`FAIL ${name}\n     ${e instanceof CheckFailed ? e.message : e.stack || e}`);
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        try {
          mkdirSync(ARTIFACTS, { recursive: true });
          const base = path.join(ARTIFACTS, `inbox-e2e-failure-${Date.now()}`);
          await page.screenshot({ path: `${base}.png`, fullPage: true });
          writeFileSync(`${base}.txt`, `${page.url()}\n\n${await page.locator("body").innerText()}`);
          console.error(`     the page (${page.url()}) is saved in ${base}.png and .txt`);
        } catch (_) {
          /* the page may be gone */
        }
      }
      await context.close().catch(() => {});
    }
    break; // the checks build on each other
  }
}
if (pageErrors.length) {
  failed += 1;
  console.error(`FAIL the pages logged errors:\n     ${pageErrors.join("\n     ")}`);
}
await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
