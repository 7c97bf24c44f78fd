// The Flow web inbox: a single page, no framework, no build step, no external resources.
// It talks to the JSON API of `flowrt serve` (spec/server.md) with the token the user signed
// in with (kept in this tab's session storage). Routes live in the URL's hash:
//   #/inbox            the gates the user may decide now
//   #/runs             runs, newest first (#/runs?status=waiting)
//   #/runs/ID          a run: summary, open gate, timeline, audit trail, cancel
//   #/start            the workflows that can be started
//   #/start/NAME       a form generated from the workflow's input schema
"use strict";

(function () {
  const TOKEN_KEY = "flow-token";
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const main = document.getElementById("main");
  const statusBox = document.getElementById("status");

  let me = null; // { user, roles } once signed in
  let pageTimer = null; // the current page's refresh timer
  let renderSeq = 0; // bumps on every route change; stale async renders check it

  // --- Small DOM helpers -------------------------------------------------------------------

  /** h("p", { class: "x", onclick: f }, "text", child, [more]) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key.startsWith("on") && typeof value === "function") {
          el.addEventListener(key.slice(2), value);
        } else if (key === "class") {
          el.className = value;
        } else if (key === "text") {
          el.textContent = value;
        } else if (key in el && typeof value !== "string") {
          el[key] = value;
        } else {
          el.setAttribute(key, value === true ? "" : String(value));
        }
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  let idCounter = 0;
  function newId(prefix) {
    idCounter += 1;
    return `${prefix}-${idCounter}`;
  }

  function say(message, kind) {
    // Clear first so that the same message twice is announced twice.
    statusBox.textContent = "";
    statusBox.className = "status" + (kind ? ` status-${kind}` : "");
    if (!message) return;
    window.setTimeout(() => {
      statusBox.textContent = message;
    }, 30);
  }

  function humanize(name) {
    const text = String(name).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  // --- Times ---------------------------------------------------------------------------------

  function toMs(t) {
    if (t === null || t === undefined || t === "") return null;
    if (typeof t === "number") return t;
    const parsed = Date.parse(t);
    return Number.isNaN(parsed) ? null : parsed;
  }

  const relativeFormat =
    typeof Intl !== "undefined" && Intl.RelativeTimeFormat
      ? new Intl.RelativeTimeFormat("en", { numeric: "auto" })
      : null;

  function relative(ms) {
    const diff = ms - Date.now();
    const abs = Math.abs(diff);
    const units = [
      ["day", 86400000],
      ["hour", 3600000],
      ["minute", 60000],
      ["second", 1000],
    ];
    for (const [unit, size] of units) {
      if (abs >= size || unit === "second") {
        const n = Math.round(diff / size);
        if (relativeFormat) return relativeFormat.format(n, unit);
        return n >= 0 ? `in ${n} ${unit}s` : `${-n} ${unit}s ago`;
      }
    }
    return "";
  }

  function absolute(ms, seconds) {
    try {
      return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: seconds ? "medium" : "short" });
    } catch (_) {
      return new Date(ms).toISOString();
    }
  }

  /** A <time> showing an absolute time, followed by a relative one (`withRelative`) or
   * with seconds (`withRelative === "seconds"`, for timelines). */
  function timeEl(t, withRelative) {
    const ms = toMs(t);
    if (ms === null) return h("span", { class: "muted" }, "—");
    const iso = new Date(ms).toISOString();
    const el = h("time", { datetime: iso, title: iso }, absolute(ms, withRelative === "seconds"));
    if (!withRelative || withRelative === "seconds") return el;
    return h("span", null, el, " ", h("span", { class: "muted" }, `(${relative(ms)})`));
  }

  // --- The API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, problems) {
      super(message);
      this.status = status;
      this.code = code;
      this.problems = problems || [];
    }
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "network", `The server cannot be reached (${e.message}).`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const err = (data && data.error) || {};
      const message =
        err.message || (text && !data ? text.slice(0, 300) : `${response.status} ${response.statusText}`);
      const problems = err.problems || (data && data.problems) || [];
      const error = new ApiError(response.status, err.code || "error", message, problems);
      if (response.status === 401 && path !== "/api/me") {
        signOut(`You are signed out: ${message}`);
      }
      throw error;
    }
    return data;
  }

  function describeError(e) {
    if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
    const what = {
      400: "Bad request",
      401: "Not signed in",
      403: "Not allowed",
      404: "Not found",
      409: "Conflict",
      422: "Invalid input",
    }[e.status];
    return what ? `${what}: ${e.message}` : e.message;
  }

  // --- Rendering values ---------------------------------------------------------------------

  function isPlainObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  function scrollBox(table, label) {
    // Wide tables scroll inside their own box, never the page.
    return h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table);
  }

  /** A readable rendering of any JSON value: records as two-column tables, lists of
   * records as tables with a header row, nested values recursively. With `schema` (a JSON
   * Schema of the value as the compiler writes it, `root` holding its `$defs`), a record's
   * fields come in its `x-order` (the order the workflow wrote or declared them: a JSON
   * object has none, and the server's are alphabetical), the others after it, alphabetically. */
  function renderValue(value, label, depth, schema, root) {
    depth = depth || 0;
    const shape = shownSchema(schema, root);
    if (value === null || value === undefined) return h("span", { class: "muted" }, "none");
    if (typeof value === "boolean") return h("span", { class: "bool" }, value ? "yes" : "no");
    if (typeof value === "number") return h("span", { class: "num" }, String(value));
    if (typeof value === "string") {
      return h("span", { class: /\S{24,}/.test(value) ? "text long" : "text" }, value);
    }
    if (Array.isArray(value)) {
      if (value.length === 0) return h("span", { class: "muted" }, "empty list");
      const items = shape && shape.items ? shownSchema(shape.items, root) : null;
      if (value.every(isPlainObject)) {
        const keys = [];
        for (const item of value) {
          for (const key of Object.keys(item)) if (!keys.includes(key)) keys.push(key);
        }
        const columns = items ? inSchemaOrder(keys, items) : keys;
        const table = h(
          "table",
          { class: "data" },
          label ? h("caption", { class: "visually-hidden" }, label) : null,
          h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            null,
            value.map((item) =>
              h(
                "tr",
                null,
                columns.map((c) =>
                  h("td", null, c in item ? renderValue(item[c], c, depth + 1, fieldSchema(items, c, root), root) : "")
                )
              )
            )
          )
        );
        return depth === 0 ? scrollBox(table, label || "Table") : table;
      }
      return h(
        "ul",
        { class: "values" },
        value.map((item) => h("li", null, renderValue(item, label, depth + 1, items, root)))
      );
    }
    if (isPlainObject(value)) {
      const keys = shape ? inSchemaOrder(Object.keys(value), shape) : Object.keys(value);
      if (keys.length === 0) return h("span", { class: "muted" }, "empty");
      const table = h(
        "table",
        { class: "kv" },
        label ? h("caption", { class: "visually-hidden" }, label) : null,
        h(
          "tbody",
          null,
          keys.map((k) =>
            h(
              "tr",
              null,
              h("th", { scope: "row" }, k),
              h("td", null, renderValue(value[k], k, depth + 1, fieldSchema(shape, k, root), root))
            )
          )
        )
      );
      return depth === 0 ? scrollBox(table, label || "Details") : table;
    }
    return h("span", null, String(value));
  }

  /** The schema a shown value has: references resolved, and `T?` (anyOf [T, null]) as `T`,
   * since a null shows as "none" whatever its schema. Null without a schema. */
  function shownSchema(schema, root) {
    if (!schema || typeof schema !== "object") return null;
    const s = resolveSchema(schema, root);
    if (Array.isArray(s.anyOf)) {
      const rest = s.anyOf.filter((a) => !isNullSchema(a));
      if (rest.length === 1) return shownSchema(rest[0], root);
    }
    return s;
  }

  /** The schema of field `key` of an object of schema `s`: a record's property, a map's
   * values, or the payload of an enum variant (`{"Variant": {…}}`, one of `oneOf`). */
  function fieldSchema(s, key, root) {
    if (!s) return null;
    if (s.properties && Object.hasOwn(s.properties, key)) return s.properties[key];
    if (s.additionalProperties && typeof s.additionalProperties === "object") return s.additionalProperties;
    if (Array.isArray(s.oneOf)) {
      for (const alt of s.oneOf) {
        const choice = shownSchema(alt, root);
        if (choice && choice.properties && Object.hasOwn(choice.properties, key)) return choice.properties[key];
      }
    }
    return null;
  }

  /** `keys` in the `x-order` of schema `s`, then the ones it does not name, alphabetically. */
  function inSchemaOrder(keys, s) {
    const order = Array.isArray(s["x-order"]) ? s["x-order"].filter((k) => keys.includes(k)) : [];
    const rest = keys.filter((k) => !order.includes(k)).sort();
    return order.concat(rest);
  }

  /** One line of text summarising a value (for timelines). */
  function summary(value, max) {
    max = max || 90;
    let text;
    if (value === null || value === undefined) return "";
    if (isPlainObject(value)) {
      text = Object.entries(value)
        .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(", ");
    } else {
      text = typeof value === "string" ? value : JSON.stringify(value);
    }
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  // --- Forms generated from JSON Schema -----------------------------------------------------
  //
  // The compiler's schemas (compiler/src/bytecode/schema.rs): integer, number, boolean,
  // string (Duration and Time are strings with a description), `T?` as anyOf [T, null],
  // List<T> as array, Map<T> as object with additionalProperties, records as objects with
  // properties and required, enums as a string enum or oneOf [string enum, {Variant: {…}}…],
  // Json as {}, recursive types through $defs/$ref.
  //
  // An editor is { el, read(path, errors) -> value, focus() }. Reading registers every
  // editor under its JSON path in `form.fields` so that server problems can be placed.

  const LONG_TEXT = /(body|text|comment|note|notes|description|message|reason|summary|details)$/i;

  function resolveSchema(schema, root, depth) {
    depth = depth || 0;
    if (schema && typeof schema.$ref === "string" && depth < 32) {
      const match = /^#\/\$defs\/(.+)$/.exec(schema.$ref);
      const defs = (root && root.$defs) || {};
      if (match && defs[match[1]]) return resolveSchema(defs[match[1]], root, depth + 1);
      return {};
    }
    return schema || {};
  }

  function isNullSchema(s) {
    return s && s.type === "null";
  }

  /** What kind of editor a schema needs. */
  function classify(schema, root) {
    const s = resolveSchema(schema, root);
    const alternatives = s.anyOf || (s.oneOf && s.oneOf.some(isNullSchema) ? s.oneOf : null);
    if (alternatives && alternatives.some(isNullSchema)) {
      const rest = alternatives.filter((a) => !isNullSchema(a));
      if (rest.length === 1) return { kind: "optional", inner: rest[0], schema: s };
      return { kind: "json", schema: s };
    }
    if (Array.isArray(s.type)) {
      const rest = s.type.filter((t) => t !== "null");
      if (s.type.includes("null") && rest.length === 1) {
        return { kind: "optional", inner: Object.assign({}, s, { type: rest[0] }), schema: s };
      }
      return { kind: "json", schema: s };
    }
    if (Array.isArray(s.oneOf)) return { kind: "variant", schema: s, choices: variantChoices(s, root) };
    if (Array.isArray(s.enum)) return { kind: "enum", schema: s, values: s.enum };
    switch (s.type) {
      case "string":
        return { kind: "string", schema: s };
      case "integer":
        return { kind: "integer", schema: s };
      case "number":
        return { kind: "number", schema: s };
      case "boolean":
        return { kind: "boolean", schema: s };
      case "null":
        return { kind: "null", schema: s };
      case "array":
        return { kind: "list", schema: s, items: s.items || {} };
      case "object":
        if (s.properties) return { kind: "record", schema: s };
        if (s.additionalProperties && typeof s.additionalProperties === "object") {
          return { kind: "map", schema: s, values: s.additionalProperties };
        }
        return { kind: "json", schema: s };
      default:
        return { kind: "json", schema: s };
    }
  }

  /** The variants of an enum's oneOf: [{ name, fields (a record schema) or null }]. */
  function variantChoices(s, root) {
    const out = [];
    for (const alt0 of s.oneOf) {
      const alt = resolveSchema(alt0, root);
      if (Array.isArray(alt.enum)) {
        for (const v of alt.enum) out.push({ name: String(v), fields: null });
      } else if (alt.type === "string" && typeof alt.const === "string") {
        out.push({ name: alt.const, fields: null });
      } else if (alt.type === "object" && alt.properties) {
        const names = Object.keys(alt.properties);
        if (names.length === 1) out.push({ name: names[0], fields: alt.properties[names[0]] });
      }
    }
    return out;
  }

  /** A labelled field: label, hint, control, error message. */
  function fieldBox(id, labelText, control, opts) {
    opts = opts || {};
    const hintId = opts.hint ? `${id}-hint` : null;
    const errorId = `${id}-error`;
    const error = h("p", { class: "field-error", id: errorId, hidden: true });
    const describedBy = [hintId, errorId].filter(Boolean).join(" ");
    control.setAttribute("aria-describedby", describedBy);
    const labelEl = h(
      "label",
      { for: id },
      labelText,
      opts.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null,
      opts.optional ? h("span", { class: "muted" }, " (optional)") : null
    );
    const box = opts.checkbox
      ? h("div", { class: "field field-check" }, control, labelEl, opts.hint ? h("p", { class: "hint", id: hintId }, opts.hint) : null, error)
      : h("div", { class: "field" }, labelEl, opts.hint ? h("p", { class: "hint", id: hintId }, opts.hint) : null, control, error);
    return {
      box,
      showError(message) {
        error.textContent = message;
        error.hidden = false;
        control.setAttribute("aria-invalid", "true");
      },
      clearError() {
        error.textContent = "";
        error.hidden = true;
        control.removeAttribute("aria-invalid");
      },
    };
  }

  function groupError(container) {
    const error = h("p", { class: "field-error", hidden: true });
    container.append(error);
    return {
      showError(message) {
        error.textContent = message;
        error.hidden = false;
      },
      clearError() {
        error.textContent = "";
        error.hidden = true;
      },
    };
  }

  function register(form, path, editor, errors) {
    form.fields.set(path, editor);
    editor.clearError();
    return errors;
  }

  function fail(form, path, editor, errors, message) {
    editor.showError(message);
    errors.push({ path, message, editor });
  }

  /**
   * An editor for `schema`. `opts`: { label, name, required, optional, root, form }.
   * `optional` means the value may stay empty (null).
   */
  function makeEditor(schema, opts) {
    const info = classify(schema, opts.root);
    if (info.kind === "optional") {
      return makeEditor(info.inner, Object.assign({}, opts, { optional: true, required: false }));
    }
    switch (info.kind) {
      case "string":
      case "integer":
      case "number":
        return scalarEditor(info, opts);
      case "boolean":
        return opts.optional ? optionalBooleanEditor(opts) : booleanEditor(opts);
      case "enum":
        return selectEditor(info.values.map(String), opts, null);
      case "variant":
        return variantEditor(info, opts);
      case "null":
        return { el: h("span", { hidden: true }), read: () => null, focus() {} };
      case "record":
        return opts.optional ? toggledEditor(info, opts) : recordEditor(info, opts);
      case "list":
      case "map":
        return opts.optional ? toggledEditor(info, opts) : info.kind === "list" ? listEditor(info, opts) : mapEditor(info, opts);
      default:
        return jsonEditor(opts);
    }
  }

  function scalarEditor(info, opts) {
    const id = newId("f");
    const s = info.schema;
    const long = info.kind === "string" && s.format !== "password" && LONG_TEXT.test(opts.name || "");
    let hint = opts.doc || s.description || null;
    if (opts.doc && s.description && !opts.doc.includes(s.description)) hint = `${opts.doc} (${s.description})`;
    if (info.kind === "integer") hint = hint || "A whole number.";
    if (info.kind === "number") hint = hint || "A number.";
    const control = long
      ? h("textarea", { id, name: opts.name, rows: 4 })
      : h("input", {
          id,
          name: opts.name,
          type: s.format === "password" ? "password" : "text",
          autocomplete: s.format === "password" ? "new-password" : "off",
          inputmode: info.kind === "integer" ? "numeric" : info.kind === "number" ? "decimal" : undefined,
        });
    if (opts.required) control.setAttribute("aria-required", "true");
    const field = fieldBox(id, opts.label, control, { hint, required: opts.required, optional: opts.optional });
    return {
      el: field.box,
      focus: () => control.focus(),
      setValue(v) {
        control.value = v === null || v === undefined ? "" : String(v);
      },
      showError: field.showError,
      clearError: field.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        const raw = control.value;
        const trimmed = raw.trim();
        if (trimmed === "") {
          if (opts.optional) return null;
          fail(opts.form, path, this, errors, `${opts.label} is required.`);
          return undefined;
        }
        if (info.kind === "integer") {
          if (!/^[+-]?\d+$/.test(trimmed) || !Number.isSafeInteger(Number(trimmed))) {
            fail(opts.form, path, this, errors, `${opts.label} must be a whole number.`);
            return undefined;
          }
          return Number(trimmed);
        }
        if (info.kind === "number") {
          const n = Number(trimmed);
          if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(trimmed) || !Number.isFinite(n)) {
            fail(opts.form, path, this, errors, `${opts.label} must be a number.`);
            return undefined;
          }
          return n;
        }
        return raw;
      },
    };
  }

  function booleanEditor(opts) {
    const id = newId("f");
    const control = h("input", { id, name: opts.name, type: "checkbox" });
    const field = fieldBox(id, opts.label, control, { checkbox: true, hint: opts.doc || null });
    return {
      el: field.box,
      focus: () => control.focus(),
      setValue(v) {
        control.checked = Boolean(v);
      },
      showError: field.showError,
      clearError: field.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        return control.checked;
      },
    };
  }

  function optionalBooleanEditor(opts) {
    return selectEditor(["yes", "no"], opts, { yes: true, no: false });
  }

  /** A <select>; `mapping` turns an option into its value (else the option itself). */
  function selectEditor(values, opts, mapping) {
    const id = newId("f");
    const control = h(
      "select",
      { id, name: opts.name },
      h("option", { value: "" }, opts.optional ? "— none —" : "— choose —"),
      values.map((v) => h("option", { value: v }, v))
    );
    if (opts.required) control.setAttribute("aria-required", "true");
    const field = fieldBox(id, opts.label, control, { hint: opts.doc || null, required: opts.required, optional: opts.optional });
    return {
      el: field.box,
      control,
      focus: () => control.focus(),
      setValue(v) {
        control.value = v === null || v === undefined ? "" : String(v);
      },
      showError: field.showError,
      clearError: field.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        if (control.value === "") {
          if (opts.optional) return null;
          fail(opts.form, path, this, errors, `Choose a value for ${opts.label}.`);
          return undefined;
        }
        return mapping ? mapping[control.value] : control.value;
      },
    };
  }

  /** An enum with payload variants: a select, and the chosen variant's fields. */
  function variantEditor(info, opts) {
    const select = selectEditor(
      info.choices.map((c) => c.name),
      opts,
      null
    );
    const payload = h("div", { class: "variant-fields" });
    const wrapper = h("div", { class: "variant" }, select.el, payload);
    let current = null; // { name, editor }
    function update() {
      payload.textContent = "";
      current = null;
      const choice = info.choices.find((c) => c.name === select.control.value);
      if (choice && choice.fields) {
        const editor = recordEditor(classify(choice.fields, opts.root), {
          label: `${opts.label}: ${choice.name}`,
          name: `${opts.name}.${choice.name}`,
          root: opts.root,
          form: opts.form,
        });
        current = { name: choice.name, editor };
        payload.append(editor.el);
      }
    }
    select.control.addEventListener("change", update);
    return {
      el: wrapper,
      focus: () => select.focus(),
      showError: select.showError,
      clearError: select.clearError,
      read(path, errors) {
        const name = select.read(path, errors);
        if (name === null || name === undefined) return name;
        register(opts.form, path, select, errors);
        if (current && current.name === name) {
          return { [name]: current.editor.read(`${path}.${name}`, errors) };
        }
        return name;
      },
    };
  }

  /** A record: one field per property, in a fieldset (the form's root has none). */
  /** A record schema's fields in declaration order (the server's `x-order`; JSON objects
   * have no order of their own), then any it does not name. */
  function orderedFields(s) {
    const props = s.properties || {};
    const order = Array.isArray(s["x-order"]) ? s["x-order"].filter((n) => Object.hasOwn(props, n)) : [];
    const rest = Object.keys(props).filter((n) => !order.includes(n));
    return order.concat(rest).map((n) => [n, props[n]]);
  }

  function recordEditor(info, opts) {
    const s = resolveSchema(info.schema, opts.root);
    const required = new Set(s.required || []);
    const entries = orderedFields(s);
    const children = entries.map(([name, schema]) => ({
      name,
      editor: makeEditor(schema, {
        label: humanize(name),
        // The field's `///` doc (the server's `description`), shown as its help text.
        doc: typeof schema.description === "string" ? schema.description : null,
        name: opts.name ? `${opts.name}.${name}` : name,
        required: required.has(name),
        optional: !required.has(name),
        root: opts.root,
        form: opts.form,
      }),
    }));
    const body = children.map((c) => c.editor.el);
    const el = opts.bare
      ? h("div", { class: "record" }, body)
      : h(
          "fieldset",
          { class: "record" },
          h("legend", null, s.title || opts.label),
          opts.doc ? h("p", { class: "hint" }, opts.doc) : null,
          body
        );
    const err = groupError(el);
    return {
      el,
      focus: () => children.length && children[0].editor.focus(),
      showError: err.showError,
      clearError: err.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        const out = {};
        for (const c of children) {
          const v = c.editor.read(`${path}.${c.name}`, errors);
          if (v !== undefined) out[c.name] = v;
        }
        return out;
      },
    };
  }

  /** An optional record or list: a checkbox that shows its editor. */
  function toggledEditor(info, opts) {
    const id = newId("f");
    const inner = makeEditor(info.schema, Object.assign({}, opts, { optional: false, doc: null }));
    const check = h("input", { id, type: "checkbox", "aria-controls": `${id}-box` });
    const holder = h("div", { id: `${id}-box`, class: "toggled", hidden: true }, inner.el);
    check.addEventListener("change", () => {
      holder.hidden = !check.checked;
      if (check.checked) inner.focus();
    });
    const field = fieldBox(id, `Give ${opts.label}`, check, { checkbox: true, hint: opts.doc || null });
    const el = h("div", { class: "optional-group" }, field.box, holder);
    return {
      el,
      focus: () => check.focus(),
      showError: field.showError,
      clearError: field.clearError,
      read(path, errors) {
        if (!check.checked) {
          register(opts.form, path, this, errors);
          return null;
        }
        return inner.read(path, errors);
      },
    };
  }

  /** A list: its items, each with a Remove button, and an Add button. */
  function listEditor(info, opts) {
    const items = []; // { editor, li }
    const ol = h("ol", { class: "list-items" });
    const empty = h("p", { class: "muted list-empty" }, "No items.");
    const addButton = h("button", { type: "button", class: "secondary small" }, `Add to ${opts.label}`);
    const fieldset = h("fieldset", { class: "list" }, h("legend", null, opts.label), empty, ol, addButton);
    const err = groupError(fieldset);

    function relabel() {
      items.forEach((item, i) => {
        item.remove.textContent = "Remove";
        item.remove.setAttribute("aria-label", `Remove ${opts.label} item ${i + 1}`);
        const legendOrLabel = item.li.querySelector("legend, label");
        if (legendOrLabel && legendOrLabel.dataset.itemLabel) {
          legendOrLabel.firstChild.textContent = `${opts.label} item ${i + 1}`;
        }
      });
      empty.hidden = items.length > 0;
    }

    function add() {
      const n = items.length + 1;
      const editor = makeEditor(info.items, {
        label: `${opts.label} item ${n}`,
        name: `${opts.name}[]`,
        required: true,
        optional: false,
        root: opts.root,
        form: opts.form,
      });
      const labelEl = editor.el.querySelector("legend, label");
      if (labelEl) labelEl.dataset.itemLabel = "1";
      const remove = h("button", { type: "button", class: "secondary small remove" }, "Remove");
      const li = h("li", null, editor.el, remove);
      const item = { editor, li, remove };
      remove.addEventListener("click", () => {
        const index = items.indexOf(item);
        items.splice(index, 1);
        li.remove();
        relabel();
        const next = items[index] || items[index - 1];
        if (next) next.remove.focus();
        else addButton.focus();
        say(`Removed item ${index + 1} of ${opts.label}.`);
      });
      items.push(item);
      ol.append(li);
      relabel();
      return editor;
    }

    addButton.addEventListener("click", () => {
      const editor = add();
      editor.focus();
    });
    relabel();
    return {
      el: fieldset,
      focus: () => (items.length ? items[0].editor.focus() : addButton.focus()),
      add,
      showError: err.showError,
      clearError: err.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        return items.map((item, i) => item.editor.read(`${path}[${i}]`, errors));
      },
    };
  }

  /** A map: key and value pairs. */
  function mapEditor(info, opts) {
    const rows = [];
    const ol = h("ol", { class: "list-items" });
    const addButton = h("button", { type: "button", class: "secondary small" }, `Add to ${opts.label}`);
    const fieldset = h("fieldset", { class: "list" }, h("legend", null, opts.label), ol, addButton);
    const err = groupError(fieldset);
    function add() {
      const n = rows.length + 1;
      const key = scalarEditor({ kind: "string", schema: { type: "string" } }, {
        label: `${opts.label} key ${n}`,
        name: `${opts.name}{}`,
        required: true,
        form: opts.form,
      });
      const value = makeEditor(info.values, {
        label: `${opts.label} value ${n}`,
        name: `${opts.name}{}`,
        required: true,
        root: opts.root,
        form: opts.form,
      });
      const remove = h("button", { type: "button", class: "secondary small remove", "aria-label": `Remove ${opts.label} entry ${n}` }, "Remove");
      const li = h("li", null, key.el, value.el, remove);
      const row = { key, value, li };
      remove.addEventListener("click", () => {
        rows.splice(rows.indexOf(row), 1);
        li.remove();
        addButton.focus();
      });
      rows.push(row);
      ol.append(li);
      return key;
    }
    addButton.addEventListener("click", () => add().focus());
    return {
      el: fieldset,
      focus: () => addButton.focus(),
      showError: err.showError,
      clearError: err.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        const out = {};
        for (const row of rows) {
          const k = row.key.read(`${path}{key}`, errors);
          const v = row.value.read(`${path}.${k}`, errors);
          if (typeof k === "string") {
            if (k in out) row.key.showError(`The key ${k} is given twice.`);
            out[k] = v;
          }
        }
        return out;
      },
    };
  }

  /** Any JSON: a textarea. */
  function jsonEditor(opts) {
    const id = newId("f");
    const control = h("textarea", { id, name: opts.name, rows: 3, class: "mono", spellcheck: "false" });
    const field = fieldBox(id, opts.label, control, { hint: "Any JSON value; empty means none.", optional: opts.optional });
    return {
      el: field.box,
      focus: () => control.focus(),
      showError: field.showError,
      clearError: field.clearError,
      read(path, errors) {
        register(opts.form, path, this, errors);
        const text = control.value.trim();
        if (text === "") return null;
        try {
          return JSON.parse(text);
        } catch (e) {
          fail(opts.form, path, this, errors, `${opts.label} is not valid JSON.`);
          return undefined;
        }
      },
    };
  }

  /**
   * A whole form for `schema`: { el, read() -> { value, errors }, showProblems(problems) }.
   * Records at the root are laid out without a fieldset; anything else gets one field.
   */
  function schemaForm(schema, rootLabel) {
    const form = { fields: new Map() };
    const root = schema || {};
    const info = classify(root, root);
    const editor =
      info.kind === "record"
        ? recordEditor(info, { label: rootLabel, name: "", root, form, bare: true })
        : makeEditor(root, { label: rootLabel, name: "value", required: true, root, form });
    return {
      el: editor.el,
      fields: form.fields,
      focus: () => editor.focus(),
      read() {
        const errors = [];
        form.fields.clear();
        const value = editor.read("$", errors);
        return { value, errors };
      },
      /** Puts server problems next to their fields; returns those that found none. */
      showProblems(problems, prefixes) {
        const unplaced = [];
        for (const p of problems || []) {
          const editorAt = findField(form.fields, String(p.path || "$"), prefixes || []);
          if (editorAt && editorAt.path !== "$") editorAt.editor.showError(p.message);
          else unplaced.push(p);
        }
        return unplaced;
      },
    };
  }

  /** The editor a problem's JSON path points at: the deepest registered field on the path
   * (after taking off a prefix such as `$.value`), else the form's root. */
  function findField(fields, path, prefixes) {
    const candidates = [];
    for (const prefix of prefixes) {
      if (path.startsWith(prefix + ".") || path.startsWith(prefix + "[")) {
        candidates.push("$" + path.slice(prefix.length));
      }
    }
    candidates.push(path);
    for (let candidate of candidates) {
      while (candidate && candidate !== "$") {
        if (fields.has(candidate)) return { path: candidate, editor: fields.get(candidate) };
        const cut = Math.max(candidate.lastIndexOf("."), candidate.lastIndexOf("["));
        if (cut <= 0) break;
        candidate = candidate.slice(0, cut);
      }
    }
    return fields.has("$") ? { path: "$", editor: fields.get("$") } : null;
  }

  function errorList(form, errors) {
    // A summary at the top of the form, each item moving focus to its field.
    const box = form.querySelector(".form-error");
    box.textContent = "";
    if (!errors.length) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.append(
      h("p", null, errors.length === 1 ? "Please correct this:" : `Please correct these ${errors.length} problems:`),
      h(
        "ul",
        null,
        errors.map((e) =>
          h(
            "li",
            null,
            e.editor
              ? h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); e.editor.focus(); } }, e.message)
              : `${e.path ? e.path + ": " : ""}${e.message}`
          )
        )
      )
    );
  }

  // --- Layout and routing -------------------------------------------------------------------

  function setPage(title, ...content) {
    main.textContent = "";
    const heading = h("h1", { tabindex: "-1" }, title);
    append(main, [heading, content]);
    document.title = `${title} · Flow`;
    return heading;
  }

  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [pathPart, queryPart] = raw.split("?");
    const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
    const query = new URLSearchParams(queryPart || "");
    return { parts, query };
  }

  function markNav(section) {
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.route === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  async function route() {
    renderSeq += 1;
    const seq = renderSeq;
    if (pageTimer) {
      window.clearInterval(pageTimer);
      pageTimer = null;
    }
    if (!token()) {
      showSignIn();
      return;
    }
    if (!me) {
      try {
        me = await api("GET", "/api/me");
      } catch (e) {
        if (e.status === 401) {
          signOut(`Your token was refused: ${e.message}`);
          return;
        }
        setPage("Flow inbox", h("p", { class: "error-box", role: "alert" }, describeError(e)));
        return;
      }
      if (seq !== renderSeq) return;
      showWho();
    }
    const { parts, query } = parseRoute();
    const section = parts[0] || "inbox";
    markNav(section);
    let heading;
    try {
      if (section === "runs" && parts[1]) heading = await runPage(parts[1], seq);
      else if (section === "runs") heading = await runsPage(query, seq);
      else if (section === "start" && parts[1]) heading = await startPage(parts[1], seq);
      else if (section === "start") heading = await workflowsPage(seq);
      else heading = await inboxPage(seq);
    } catch (e) {
      if (seq !== renderSeq) return;
      // A run the user may not read (403) or that does not exist (404) says so as the title.
      const title = { 403: "Not allowed", 404: "Not found" }[e && e.status] || "Something went wrong";
      heading = setPage(title, h("p", { class: "error-box", role: "alert" }, describeError(e)));
    }
    if (seq === renderSeq && heading && focusOnRender) heading.focus();
    focusOnRender = true;
  }
  let focusOnRender = false;

  function showWho() {
    document.getElementById("nav").hidden = false;
    const who = document.getElementById("who");
    who.hidden = false;
    const roles = me.roles && me.roles.length ? ` (${me.roles.join(", ")})` : "";
    document.getElementById("who-text").textContent = `Signed in as ${me.user}${roles}`;
  }

  function signOut(message) {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* nothing to remove */
    }
    me = null;
    document.getElementById("nav").hidden = true;
    document.getElementById("who").hidden = true;
    renderSeq += 1;
    showSignIn(message);
  }

  function showSignIn(message) {
    const id = newId("token");
    const input = h("input", {
      id,
      name: "token",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      "aria-describedby": `${id}-hint`,
    });
    const errorBox = h("div", { class: "error-box", role: "alert", hidden: !message }, message || "");
    const button = h("button", { type: "submit", class: "primary" }, "Sign in");
    const form = h(
      "form",
      { class: "card signin", novalidate: true },
      h("div", { class: "field" },
        h("label", { for: id }, "API token"),
        h("p", { class: "hint", id: `${id}-hint` }, "Ask an administrator for a token (flowrt token create YOUR_NAME). It is kept only in this tab."),
        input),
      errorBox,
      h("div", { class: "actions" }, button)
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) {
        errorBox.hidden = false;
        errorBox.textContent = "Enter your API token.";
        input.focus();
        return;
      }
      button.disabled = true;
      sessionStorage.setItem(TOKEN_KEY, value);
      try {
        me = await api("GET", "/api/me");
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        me = null;
        button.disabled = false;
        errorBox.hidden = false;
        errorBox.textContent = e.status === 401 ? `This token was refused: ${e.message}` : describeError(e);
        input.focus();
        return;
      }
      showWho();
      say(`Signed in as ${me.user}.`);
      if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/inbox";
      else route();
    });
    setPage("Sign in", h("p", null, "Sign in to see the decisions waiting for you."), form);
    input.focus();
  }

  // --- The inbox ----------------------------------------------------------------------------

  function decisionKey(d) {
    return `${d.run}\u0000${d.gate}\u0000${d.view_hash || ""}`;
  }

  async function inboxPage(seq) {
    const decisions = await api("GET", "/api/decisions");
    if (seq !== renderSeq) return null;
    const count = h("p", { class: "lead", id: "inbox-count" });
    const list = h("div", { class: "decisions" });
    const refresh = h("button", { type: "button", class: "secondary small" }, "Refresh");
    const heading = setPage("Inbox", h("div", { class: "toolbar" }, count, refresh), list);
    const cards = new Map();

    function update(items) {
      const keys = new Set(items.map(decisionKey));
      for (const [key, card] of cards) {
        if (!keys.has(key)) {
          card.remove();
          cards.delete(key);
        }
      }
      for (const d of items) {
        const key = decisionKey(d);
        if (!cards.has(key)) {
          const card = decisionCard(d, {
            onDone() {
              card.remove();
              cards.delete(key);
              updateCount();
              heading.focus();
            },
          });
          cards.set(key, card);
          list.append(card);
        }
      }
      updateCount();
    }
    function updateCount() {
      const n = cards.size;
      count.textContent =
        n === 0 ? "Nothing is waiting for you." : n === 1 ? "1 decision is waiting for you." : `${n} decisions are waiting for you.`;
    }
    async function reload(announce) {
      try {
        const items = await api("GET", "/api/decisions");
        if (seq !== renderSeq) return;
        update(items);
        if (announce) say(count.textContent);
      } catch (e) {
        if (announce) say(describeError(e), "error");
      }
    }
    refresh.addEventListener("click", () => reload(true));
    update(decisions);
    pageTimer = window.setInterval(() => {
      if (document.visibilityState === "visible") reload(false);
    }, 15000);
    return heading;
  }

  /** A decision card: what the gate shows, who may decide, and the form to decide (or, with
   * `readOnly`, why the user cannot). */
  function decisionCard(d, hooks, readOnly) {
    const headingId = newId("gate");
    const deadlineMs = toMs(d.deadline);
    const meta = h(
      "dl",
      { class: "meta" },
      metaRow("Run", h("a", { href: `#/runs/${encodeURIComponent(d.run)}` }, d.run)),
      metaRow("Started by", d.started_by || "—"),
      metaRow("Opened", timeEl(d.opened_at, true)),
      metaRow("Approvers", Array.isArray(d.approvers) ? d.approvers.join(", ") : d.approvers || "—"),
      metaRow(
        "Deadline",
        deadlineMs === null
          ? h("span", { class: "muted" }, "none")
          : h("span", { class: deadlineMs - Date.now() < 3600000 ? "soon" : "" }, timeEl(deadlineMs, true))
      ),
      metaRow("Escalation", escalationText(d)),
      d.at_deadline ? metaRow("At the deadline", d.at_deadline) : null,
      d.kind !== "input" ? metaRow("Approvals needed", approvalsText(d)) : null
    );
    const earlier = earlierDecisions(d);
    const options =
      d.options && typeof d.options === "object"
        ? h("details", { class: "gate-options" }, h("summary", null, "Gate options, as the workflow evaluated them"), renderValue(d.options, "Gate options"))
        : null;
    const card = h(
      "article",
      { class: `card decision kind-${d.kind || "approval"}`, "aria-labelledby": headingId, "data-run": d.run, "data-gate": d.gate },
      h(
        "h2",
        { id: headingId },
        h("span", { class: "badge" }, d.kind === "input" ? "input" : "approval"),
        " ",
        d.workflow,
        h("span", { class: "muted" }, " · "),
        h("code", null, d.gate)
      ),
      d.prompt ? h("p", { class: "prompt" }, d.prompt) : null,
      d.context !== null && d.context !== undefined
        ? h(
            "section",
            { class: "context" },
            h("h3", null, "Context"),
            // In the order the workflow wrote it (the server's `context_schema`), when known.
            renderValue(d.context, "Context", 0, d.context_schema || null, d.context_schema || null)
          )
        : null,
      meta,
      earlier,
      options,
      readOnly
        ? h("p", { class: "cannot-decide" }, readOnly)
        : d.kind === "input"
        ? inputForm(d, hooks)
        : approvalForm(d, hooks)
    );
    return card;
  }

  /** Who the gate escalates to and when, or that it escalated (and to whom). */
  function escalationText(d) {
    const e = d.escalation;
    if (!e) return h("span", { class: "muted" }, "none planned");
    if (e.fired || d.escalated) {
      return h("span", null, h("strong", { class: "badge badge-warn" }, "escalated"), ` to ${e.to} at `, timeEl(e.at, true));
    }
    return h("span", { class: "escalation-plan" }, `to ${e.to} at `, timeEl(e.at, true));
  }

  /** "1 of 2" for a quorum, with a pointer to the options when the quorum is above one. */
  function approvalsText(d) {
    const remaining = d.remaining ?? 1;
    const quorum = d.quorum ?? remaining;
    if (quorum <= 1) return String(remaining);
    return `${remaining} more of ${quorum} (quorum ${quorum}, see the gate options)`;
  }

  /** The approvals earlier reviewers recorded (a quorum): who, when, their comment. */
  function earlierDecisions(d) {
    const list = Array.isArray(d.decisions) ? d.decisions : [];
    if (!list.length) return null;
    return h(
      "section",
      { class: "earlier-decisions" },
      h("h3", null, "Earlier decisions"),
      h(
        "ul",
        null,
        list.map((x) =>
          h("li", null, h("strong", null, `Approved by ${x.by}`), " ", timeEl(x.at, true), x.comment ? h("q", null, x.comment) : h("span", { class: "muted" }, " (no comment)"))
        )
      )
    );
  }

  function metaRow(term, value) {
    return h("div", null, h("dt", null, term), h("dd", null, value));
  }

  function gatePath(d, action) {
    return `/api/runs/${encodeURIComponent(d.run)}/gates/${encodeURIComponent(d.gate)}/${action}`;
  }

  function outcomeText(d, verb, result) {
    const r = result || {};
    if (r.decision === "recorded") {
      const more = r.remaining === 1 ? "1 more approval is needed" : `${r.remaining} more approvals are needed`;
      return `Your approval of ${d.gate} is recorded; ${more}.`;
    }
    const status = r.run_status ? ` The run is ${r.run_status}.` : "";
    return `${verb} ${d.gate} of run ${d.run}.${status}`;
  }

  function approvalForm(d, hooks) {
    const id = newId("comment");
    const comment = h("textarea", { id, name: "comment", rows: 3, "aria-describedby": `${id}-hint ${id}-error` });
    const commentError = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const approve = h("button", { type: "submit", class: "primary", value: "approve" }, "Approve");
    const reject = h("button", { type: "submit", class: "danger", value: "reject" }, "Reject");
    const form = h(
      "form",
      { class: "decide", novalidate: true },
      h("div", { class: "field" },
        h("label", { for: id }, "Comment"),
        h("p", { class: "hint", id: `${id}-hint` }, "Optional to approve, required to reject."),
        comment,
        commentError),
      h("div", { class: "form-error error-box", role: "alert", hidden: true }),
      h("div", { class: "actions" }, approve, reject)
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const action = ev.submitter && ev.submitter.value === "reject" ? "reject" : "approve";
      const text = comment.value.trim();
      commentError.hidden = true;
      comment.removeAttribute("aria-invalid");
      const errorBox = form.querySelector(".form-error");
      errorBox.hidden = true;
      if (action === "reject" && !text) {
        commentError.textContent = "Say why you reject: a comment is required.";
        commentError.hidden = false;
        comment.setAttribute("aria-invalid", "true");
        comment.focus();
        return;
      }
      const body = { view_hash: d.view_hash };
      if (text) body.comment = text;
      await send(form, gatePath(d, action), body, (result) => {
        say(outcomeText(d, action === "approve" ? "Approved" : "Rejected", result));
        hooks.onDone(result);
      });
    });
    return form;
  }

  function inputForm(d, hooks) {
    const generated = schemaForm(d.input_schema || {}, "Value");
    const submit = h("button", { type: "submit", class: "primary" }, "Submit");
    const form = h(
      "form",
      { class: "decide input-form", novalidate: true },
      h("h3", null, "Your answer"),
      h("div", { class: "form-error error-box", role: "alert", hidden: true }),
      generated.el,
      h("div", { class: "actions" }, submit)
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const { value, errors } = generated.read();
      errorList(form, errors);
      if (errors.length) {
        errors[0].editor.focus();
        say(`${errors.length} field${errors.length === 1 ? "" : "s"} need${errors.length === 1 ? "s" : ""} attention.`, "error");
        return;
      }
      await send(
        form,
        gatePath(d, "input"),
        { value, view_hash: d.view_hash },
        (result) => {
          say(outcomeText(d, "Submitted", result));
          hooks.onDone(result);
        },
        generated,
        ["$.value"]
      );
    });
    return form;
  }

  /** POSTs a form's request, with its buttons disabled meanwhile; errors shown in the form. */
  async function send(form, path, body, done, generated, prefixes) {
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => (b.disabled = true));
    form.setAttribute("aria-busy", "true");
    const errorBox = form.querySelector(".form-error");
    try {
      const result = await api("POST", path, body);
      done(result);
    } catch (e) {
      errorBox.textContent = "";
      errorBox.hidden = false;
      errorBox.append(h("p", null, describeError(e)));
      if (e.status === 422 && e.problems && e.problems.length) {
        const unplaced = generated ? generated.showProblems(e.problems, prefixes) : e.problems;
        if (unplaced.length) {
          errorBox.append(h("ul", null, unplaced.map((p) => h("li", null, `${p.path ? p.path + ": " : ""}${p.message}`))));
        }
      }
      if (e.status === 409) {
        errorBox.append(h("p", null, "Reload to see the gate as it is now."));
      }
      say(describeError(e), "error");
      errorBox.setAttribute("tabindex", "-1");
      errorBox.focus();
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      form.removeAttribute("aria-busy");
    }
  }

  // --- Runs ---------------------------------------------------------------------------------

  function statusBadge(status) {
    return h("span", { class: `badge status-badge st-${status}` }, status);
  }

  async function runsPage(query, seq) {
    const params = new URLSearchParams();
    if (query.get("status")) params.set("status", query.get("status"));
    if (query.get("workflow")) params.set("workflow", query.get("workflow"));
    params.set("limit", query.get("limit") || "100");
    const runs = await api("GET", `/api/runs?${params}`);
    if (seq !== renderSeq) return null;

    const statusId = newId("status");
    const select = h(
      "select",
      { id: statusId, name: "status" },
      ["", "runnable", "waiting", "completed", "failed", "cancelled"].map((s) =>
        h("option", { value: s, selected: s === (query.get("status") || "") }, s || "any")
      )
    );
    const workflowId = newId("workflow");
    const workflowInput = h("input", { id: workflowId, name: "workflow", type: "text", value: query.get("workflow") || "", autocomplete: "off" });
    const filter = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter runs" },
      h("div", { class: "field" }, h("label", { for: statusId }, "Status"), select),
      h("div", { class: "field" }, h("label", { for: workflowId }, "Workflow"), workflowInput),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "secondary" }, "Filter"))
    );
    filter.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      if (select.value) q.set("status", select.value);
      if (workflowInput.value.trim()) q.set("workflow", workflowInput.value.trim());
      location.hash = `#/runs${q.toString() ? "?" + q : ""}`;
    });
    const table = runs.length
      ? scrollBox(
          h(
            "table",
            { class: "data runs" },
            h("caption", { class: "visually-hidden" }, "Runs, newest first"),
            h("thead", null, h("tr", null, ["Run", "Workflow", "Status", "Outcome", "Waiting on", "Started by", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              null,
              runs.map((r) =>
                h(
                  "tr",
                  null,
                  h("td", null, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.id)),
                  h("td", null, r.workflow),
                  h("td", null, statusBadge(r.status)),
                  h("td", { class: "outcome" }, r.outcome || ""),
                  h("td", null, r.waiting_on || ""),
                  h("td", null, r.started_by || ""),
                  h("td", null, timeEl(r.updated_at, false))
                )
              )
            )
          ),
          "Runs"
        )
      : h("p", { class: "muted" }, "No runs match.");
    return setPage("Runs", filter, table);
  }

  async function runPage(id, seq) {
    const run = await api("GET", `/api/runs/${encodeURIComponent(id)}`);
    if (seq !== renderSeq) return null;
    const [history, audit, mine] = await Promise.all([
      api("GET", `/api/runs/${encodeURIComponent(id)}/history`).catch((e) => e),
      api("GET", `/api/runs/${encodeURIComponent(id)}/audit`).catch((e) => e),
      run.gate ? api("GET", "/api/decisions").catch(() => null) : null,
    ]);
    if (seq !== renderSeq) return null;

    const final = FINAL.has(run.status);
    const summaryList = h(
      "dl",
      { class: "meta" },
      metaRow("Workflow", run.workflow),
      metaRow("Status", h("span", { id: "run-status" }, statusBadge(run.status))),
      run.outcome ? metaRow("Outcome", h("strong", { id: "run-outcome" }, run.outcome)) : null,
      run.waiting_on ? metaRow("Waiting on", run.waiting_on) : null,
      metaRow("Started by", run.started_by || "—"),
      run.parent ? metaRow("Parent run", h("a", { href: `#/runs/${encodeURIComponent(run.parent)}` }, run.parent)) : null,
      metaRow("Version", h("code", { class: "hash", title: run.version }, String(run.version || "").slice(0, 12))),
      metaRow("Created", timeEl(run.created_at, true)),
      metaRow("Updated", timeEl(run.updated_at, true))
    );

    const sections = [
      h("section", { class: "card", "aria-labelledby": "run-summary" }, h("h2", { id: "run-summary" }, "Summary"), summaryList, final ? null : cancelControl(run)),
    ];
    if (run.gate) {
      sections.push(
        h("section", { class: "open-gate", "aria-labelledby": "open-gate" },
          h("h2", { id: "open-gate" }, "Open gate"),
          decisionCard(
            Object.assign({ run: run.id, workflow: run.workflow }, run.gate),
            {
              onDone: () => {
                focusOnRender = true;
                route();
              },
            },
            whyNot(run, mine)
          ))
      );
    }
    if (!final && Array.isArray(run.signals) && run.signals.length) {
      sections.push(signalsSection(run));
    }
    sections.push(h("section", { class: "card", "aria-labelledby": "run-input" }, h("h2", { id: "run-input" }, "Input"), renderValue(run.input, "Input")));
    if (run.status === "completed") {
      sections.push(h("section", { class: "card", "aria-labelledby": "run-output" }, h("h2", { id: "run-output" }, "Output"), renderValue(run.output, "Output")));
    }
    if (run.error !== null && run.error !== undefined) {
      sections.push(h("section", { class: "card error-card", "aria-labelledby": "run-error" }, h("h2", { id: "run-error" }, "Error"), renderValue(run.error, "Error")));
    }
    sections.push(historySection(history));
    sections.push(auditSection(audit));
    const refresh = h("button", { type: "button", class: "secondary small" }, "Refresh");
    refresh.addEventListener("click", () => {
      focusOnRender = true;
      route().then(() => say(`Run ${run.id} reloaded.`));
    });
    const heading = setPage(
      `Run ${run.id}`,
      h("div", { class: "toolbar" }, h("p", { class: "lead" }, h("a", { href: "#/runs" }, "All runs")), refresh),
      sections
    );

    // A run being driven (just started, or just decided) changes soon: look again.
    if (run.status === "runnable" || run.status === "running") {
      let tries = 0;
      pageTimer = window.setInterval(async () => {
        tries += 1;
        if (tries > 30) {
          window.clearInterval(pageTimer);
          pageTimer = null;
          return;
        }
        try {
          const again = await api("GET", `/api/runs/${encodeURIComponent(id)}`);
          if (seq === renderSeq && again.status !== run.status) {
            focusOnRender = false;
            say(`Run ${id} is now ${again.status}.`);
            route();
          }
        } catch (_) {
          /* keep the page as it is */
        }
      }, 1000);
    }
    return heading;
  }

  /** The signals a running run accepts: a form for each the user may send, and who may send
   * the others. A signal is queued until the run waits for it, so it can be sent any time. */
  function signalsSection(run) {
    const items = run.signals.map((signal) => {
      const queued =
        signal.queued > 0
          ? h("p", { class: "muted signal-queued" }, `${signal.queued} queued, not yet taken by the run`)
          : null;
      if (!signal.may_send) {
        return h(
          "li",
          { class: "signal", "data-signal": signal.name },
          h("h3", null, h("code", null, signal.name)),
          h("p", { class: "muted" }, `Only ${signal.senders} may send it.`),
          queued
        );
      }
      const generated = signal.value_schema ? schemaForm(signal.value_schema, "Value") : null;
      const submit = h("button", { type: "submit", class: "primary" }, `Send ${signal.name}`);
      const form = h(
        "form",
        { class: "signal-form", novalidate: true, "data-signal": signal.name },
        h("div", { class: "form-error error-box", role: "alert", hidden: true }),
        generated ? generated.el : null,
        h("div", { class: "actions" }, submit)
      );
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        let value = null;
        if (generated) {
          const read = generated.read();
          errorList(form, read.errors);
          if (read.errors.length) {
            read.errors[0].editor.focus();
            say(`${read.errors.length} field${read.errors.length === 1 ? "" : "s"} need${read.errors.length === 1 ? "s" : ""} attention.`, "error");
            return;
          }
          value = read.value;
        }
        await send(
          form,
          `/api/runs/${encodeURIComponent(run.id)}/signals/${encodeURIComponent(signal.name)}`,
          { value },
          (result) => {
            const what = result.taken_now ? "taken by the run" : "queued until the run waits for it";
            say(`Signal ${signal.name} #${result.number} sent: ${what}.`);
            focusOnRender = true;
            route();
          },
          generated,
          ["$.value", "$"]
        );
      });
      return h(
        "li",
        { class: "signal", "data-signal": signal.name },
        h("h3", null, h("code", null, signal.name)),
        h("p", { class: "muted" }, `${signal.senders} may send it; you may.`),
        queued,
        form
      );
    });
    return h(
      "section",
      { class: "card signals", "aria-labelledby": "run-signals" },
      h("h2", { id: "run-signals" }, "Signals"),
      h("p", { class: "muted" }, "Messages the run accepts while it runs. One sent before the run waits for it is kept until it does."),
      h("ul", { class: "signal-list" }, items)
    );
  }

  /** Why the user cannot decide the run's open gate, or null when they can (it is among
   * their decisions, or those could not be read: then the server decides). */
  function whyNot(run, mine) {
    if (!Array.isArray(mine)) return null;
    if (mine.some((d) => d.run === run.id && d.gate === run.gate.gate)) return null;
    const approvers = Array.isArray(run.gate.approvers) ? run.gate.approvers.join(", ") : run.gate.approvers;
    const decided = Array.isArray(run.gate.decisions) ? run.gate.decisions : [];
    if (me && decided.some((x) => x.by === me.user)) {
      const n = run.gate.remaining ?? 1;
      const more = n === 1 ? "1 more approval from another reviewer is needed" : `${n} more approvals from other reviewers are needed`;
      return `You already approved this gate; ${more}.`;
    }
    if (run.gate.kind !== "input" && me && run.started_by === me.user) {
      return `You cannot decide this gate: you started the run, and another person must approve it (${approvers}).`;
    }
    return `You cannot decide this gate now: it waits for ${approvers || "someone else"}.`;
  }

  function cancelControl(run) {
    const holder = h("div", { class: "actions cancel" });
    const start = h("button", { type: "button", class: "danger" }, "Cancel run");
    holder.append(start);
    start.addEventListener("click", () => {
      holder.textContent = "";
      const yes = h("button", { type: "button", class: "danger" }, "Yes, cancel the run");
      const no = h("button", { type: "button", class: "secondary" }, "Keep it running");
      const question = h("p", { class: "confirm" }, `Cancel run ${run.id}? It stops for good.`);
      const errorBox = h("div", { class: "error-box", role: "alert", hidden: true });
      holder.append(question, yes, no, errorBox);
      yes.focus();
      no.addEventListener("click", () => {
        holder.textContent = "";
        holder.append(start);
        start.focus();
      });
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        no.disabled = true;
        try {
          await api("POST", `/api/runs/${encodeURIComponent(run.id)}/cancel`, {});
          say(`Run ${run.id} is cancelled.`);
          focusOnRender = true;
          route();
        } catch (e) {
          yes.disabled = false;
          no.disabled = false;
          errorBox.hidden = false;
          errorBox.textContent = describeError(e);
          say(describeError(e), "error");
        }
      });
    });
    return holder;
  }

  function historySection(history) {
    const body =
      history instanceof Error
        ? h("p", { class: "error-box" }, describeError(history))
        : !history.length
        ? h("p", { class: "muted" }, "No events yet.")
        : scrollBox(
            h(
              "table",
              { class: "data timeline" },
              h("caption", { class: "visually-hidden" }, "Timeline"),
              h("thead", null, h("tr", null, ["#", "Time", "Kind", "Step", "Attempt", "Duration", "Details"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                null,
                history.map((e) =>
                  h(
                    "tr",
                    { class: `ev-${e.kind || e.event}` },
                    h("td", { class: "num" }, String(e.seq ?? "")),
                    h("td", { class: "nowrap" }, timeEl(e.at, "seconds")),
                    h("td", null, h("code", null, e.kind || e.event || "")),
                    h(
                      "td",
                      null,
                      e.step || "",
                      e.line ? h("span", { class: "muted" }, ` (line ${e.line})`) : null,
                      // A branch of a `parallel` (or a child run): a link to its own run page.
                      ranIn(e) ? [" ", h("a", { href: `#/runs/${encodeURIComponent(e.data.run)}`, class: "branch-run" }, e.data.run)] : null
                    ),
                    h("td", { class: "num" }, e.attempt === null || e.attempt === undefined ? "" : String(e.attempt)),
                    h("td", { class: "num nowrap" }, e.duration_ms === null || e.duration_ms === undefined ? "" : `${e.duration_ms} ms`),
                    h("td", { class: "details" }, detailsOf(e.data))
                  )
                )
              )
            ),
            "Timeline"
          );
    return h("section", { class: "card", "aria-labelledby": "run-history" }, h("h2", { id: "run-history" }, "Timeline"), body);
  }

  /** Whether a timeline event names the run it happened in: a branch's or a child's. */
  function ranIn(e) {
    const kind = e.kind || e.event || "";
    return (kind.startsWith("branch_") || kind.startsWith("child_")) && isPlainObject(e.data) && typeof e.data.run === "string";
  }

  function detailsOf(data) {
    if (data === null || data === undefined || (isPlainObject(data) && !Object.keys(data).length)) return "";
    const short = summary(data, 60);
    const text = typeof data === "string" ? data : JSON.stringify(data);
    if (text.length <= 60 && !isPlainObject(data)) return short;
    return h("details", null, h("summary", null, short), renderValue(data, "Details", 1));
  }

  function auditSection(audit) {
    const parts = [];
    if (audit instanceof Error) {
      parts.push(h("p", { class: "error-box" }, describeError(audit)));
    } else {
      const records = Array.isArray(audit) ? audit : audit.records || audit.events || [];
      let verified = Array.isArray(audit) ? undefined : audit.verified ?? audit.verifies ?? audit.valid ?? audit.ok;
      const problem = Array.isArray(audit) ? null : audit.problem || audit.break || audit.error || null;
      if (verified === true) {
        parts.push(h("p", { class: "verified ok", id: "audit-verdict" }, `✓ The chain verifies: ${records.length} record${records.length === 1 ? "" : "s"}, each holding the hash of the one before.`));
      } else if (verified === false) {
        parts.push(h("p", { class: "verified bad", id: "audit-verdict", role: "alert" }, "✗ The chain does not verify", problem ? `: ${typeof problem === "string" ? problem : summary(problem, 200)}` : "."));
      } else {
        parts.push(h("p", { class: "muted", id: "audit-verdict" }, "The server did not say whether the chain verifies."));
      }
      if (records.length) {
        parts.push(
          scrollBox(
            h(
              "table",
              { class: "data audit" },
              h("caption", { class: "visually-hidden" }, "Audit records"),
              h("thead", null, h("tr", null, ["#", "Time", "Event", "Step", "Details", "Hash"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                null,
                records.map((r) =>
                  h(
                    "tr",
                    null,
                    h("td", { class: "num" }, String(r.seq ?? "")),
                    h("td", { class: "nowrap" }, timeEl(r.at, "seconds")),
                    h("td", null, h("code", null, r.event || r.kind || "")),
                    h("td", null, r.step || ""),
                    h("td", { class: "details" }, detailsOf(r.data)),
                    h("td", null, h("code", { class: "hash", title: `hash ${r.hash}\nprevious ${r.prev_hash}` }, String(r.hash || "").slice(0, 12)))
                  )
                )
              )
            ),
            "Audit records"
          )
        );
      }
    }
    return h("section", { class: "card", "aria-labelledby": "run-audit" }, h("h2", { id: "run-audit" }, "Audit trail"), parts);
  }

  // --- Starting runs ------------------------------------------------------------------------

  async function workflowsPage(seq) {
    const workflows = await api("GET", "/api/workflows");
    if (seq !== renderSeq) return null;
    const list = workflows.length
      ? h(
          "ul",
          { class: "workflows" },
          workflows.map((w) =>
            h(
              "li",
              { class: "card" },
              h("h2", null, w.name),
              w.doc ? h("p", null, w.doc) : null,
              h("p", { class: "muted" }, "Version ", h("code", { class: "hash", title: w.version }, String(w.version || "").slice(0, 12))),
              w.may_start === false
                ? h("p", { class: "muted" }, "You may not start this workflow.")
                : h("a", { class: "button-link", href: `#/start/${encodeURIComponent(w.name)}` }, `Start ${w.name}`)
            )
          )
        )
      : h("p", { class: "muted" }, "No workflow is deployed. Deploy one with flowrt deploy FILE.flow.");
    return setPage("Start a run", list);
  }

  async function startPage(name, seq) {
    const workflows = await api("GET", "/api/workflows");
    if (seq !== renderSeq) return null;
    const w = workflows.find((x) => x.name === name);
    if (!w) {
      return setPage("No such workflow", h("p", null, `No workflow named ${name} is deployed. `, h("a", { href: "#/start" }, "See the workflows")));
    }
    const generated = schemaForm(w.input_schema || { type: "object", properties: {} }, "Input");
    const submit = h("button", { type: "submit", class: "primary" }, "Start the run");
    const form = h(
      "form",
      { class: "card start-form", novalidate: true },
      h("div", { class: "form-error error-box", role: "alert", hidden: true }),
      generated.el,
      h("div", { class: "actions" }, submit)
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const { value, errors } = generated.read();
      errorList(form, errors);
      if (errors.length) {
        errors[0].editor.focus();
        say(`${errors.length} field${errors.length === 1 ? "" : "s"} need${errors.length === 1 ? "s" : ""} attention.`, "error");
        return;
      }
      await send(
        form,
        "/api/runs",
        { workflow: w.name, input: value },
        (result) => {
          say(`Run ${result.id} started; it is ${result.status}.`);
          focusOnRender = true;
          location.hash = `#/runs/${encodeURIComponent(result.id)}`;
        },
        generated,
        ["$.input"]
      );
    });
    return setPage(
      `Start ${w.name}`,
      w.doc ? h("p", { class: "lead" }, w.doc) : null,
      w.may_start === false ? h("p", { class: "error-box" }, "You may not start this workflow; the server will refuse.") : null,
      h("p", { class: "hint" }, "Fields marked * are required."),
      form
    );
  }

  // --- Start --------------------------------------------------------------------------------

  document.getElementById("sign-out").addEventListener("click", () => {
    signOut();
    say("Signed out.");
  });
  window.addEventListener("hashchange", () => {
    focusOnRender = true;
    route();
  });
  route();

  // For tests and debugging from the console.
  window.flowInbox = { schemaForm, renderValue, classify };
})();
