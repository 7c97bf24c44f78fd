//! The OpenAPI 3.0 description of the API, served at `/openapi.json`. A test compares it with
//! the router's routes, and `schemathesis` (CI) sends generated requests to every operation.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The usual answers of an authenticated operation besides its success.
fn with_errors(mut responses: Value, codes: &[(&str, &str)]) -> Value {
    let all = [("401", "No token, or an unknown, expired or revoked one")]
        .iter()
        .chain(codes.iter())
        .chain(
            [(
                "503",
                "The server is shutting down, or the run is busy elsewhere",
            )]
            .iter(),
        );
    for (code, description) in all {
        responses[*code] = error_response(description);
    }
    responses
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string" } })
}

pub fn document() -> Value {
    let run_id = path_param("id", "The run's id");
    let gate = path_param("gate", "The gate's name");
    let signal = path_param(
        "name",
        "The signal's name, as the workflow's `accepts` clause declares it",
    );
    let decision_result = json_response(
        "The decision was applied",
        json!({ "$ref": "#/components/schemas/DecisionResult" }),
    );
    let decide_errors: &[(&str, &str)] = &[
        ("400", "Malformed body"),
        ("403", "The user may not decide this gate (role, four-eyes)"),
        ("413", "The body is larger than 2 MiB"),
        ("415", "The body is not sent as application/json"),
        ("404", "No such run, or it does not wait at this gate"),
        (
            "409",
            "Stale view hash, already decided, timed out or finished",
        ),
    ];
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Flow operator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Start workflow runs, follow them and decide their approvals and inputs. Every operation but /health needs `Authorization: Bearer <token>` (flowrt token create USER). See spec/server.md."
        },
        "components": {
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string" },
                            "message": { "type": "string" },
                            "problems": { "type": "array", "items": {
                                "type": "object",
                                "properties": { "path": { "type": "string" }, "message": { "type": "string" } }
                            } }
                        }
                    } }
                },
                "Run": {
                    "type": "object",
                    "required": ["id", "workflow", "version", "status", "started_by", "created_at", "updated_at"],
                    "properties": {
                        "id": { "type": "string" },
                        "workflow": { "type": "string" },
                        "version": { "type": "string" },
                        "status": { "type": "string", "enum": ["runnable", "waiting", "completed", "failed", "cancelled", "continued"] },
                        "waiting_on": { "type": "string", "nullable": true },
                        "wake_at": { "type": "integer", "nullable": true },
                        "started_by": { "type": "string" },
                        "parent": { "type": "string", "nullable": true },
                        "created_at": { "type": "integer" },
                        "updated_at": { "type": "integer" },
                        "outcome": { "type": "string", "nullable": true, "description": "The enum variant a completed run returned" },
                        "output": { "description": "The result, when completed" },
                        "error": { "type": "string", "nullable": true },
                        "continued_as": { "type": "string", "description": "The run that goes on, when this one ended with `continue as` (status `continued`)" },
                        "needs_attention": { "type": "string", "description": "Why an operator must look at the run (an undo block failed), until it is resolved" }
                    }
                },
                "RunDetail": {
                    "allOf": [{ "$ref": "#/components/schemas/Run" }, {
                        "type": "object",
                        "required": ["input", "output", "error", "gate", "signals"],
                        "properties": {
                            "input": {},
                            "output": {},
                            "error": { "type": "string", "nullable": true },
                            "gate": { "nullable": true, "allOf": [{ "$ref": "#/components/schemas/Decision" }], "description": "The open gate, for anyone who may read the run" },
                            "signals": {
                                "type": "array",
                                "description": "The signals the run accepts (none once it has finished)",
                                "items": {
                                    "type": "object",
                                    "required": ["name", "senders", "may_send", "value_schema", "queued"],
                                    "properties": {
                                        "name": { "type": "string" },
                                        "senders": { "type": "string", "description": "Who may send it, as declared: role(\"support\") or system(\"billing\")" },
                                        "may_send": { "type": "boolean", "description": "Whether the caller may send it" },
                                        "value_schema": { "type": "object", "nullable": true, "description": "The JSON Schema of its value; null when it carries none" },
                                        "queued": { "type": "integer", "description": "How many the run received and has not taken yet" }
                                    }
                                }
                            }
                        }
                    }]
                },
                "Decision": {
                    "type": "object",
                    "required": ["run", "workflow", "gate", "kind", "view_hash", "quorum", "decisions", "options"],
                    "properties": {
                        "run": { "type": "string" },
                        "workflow": { "type": "string" },
                        "gate": { "type": "string" },
                        "kind": { "type": "string", "enum": ["approval", "input"] },
                        "prompt": { "type": "string", "nullable": true },
                        "context": {},
                        "approvers": { "type": "string" },
                        "started_by": { "type": "string" },
                        "opened_at": { "type": "integer" },
                        "deadline": { "type": "integer", "nullable": true },
                        "escalated": { "type": "boolean" },
                        "remaining": { "type": "integer" },
                        "view_hash": { "type": "string" },
                        "input_schema": { "type": "object", "nullable": true },
                        "context_schema": { "type": "object", "nullable": true, "description": "The JSON Schema of `context`, with each record's fields in the order the workflow wrote or declared them (`x-order`); null without a context, or for a gate of an artifact older than bytecode format 4" },
                        "quorum": { "type": "integer", "description": "Approvals needed in all" },
                        "decisions": { "type": "array", "description": "The approvals recorded so far, oldest first", "items": {
                            "type": "object", "required": ["by", "at", "comment"],
                            "properties": { "by": { "type": "string" }, "at": { "type": "integer" }, "comment": { "type": "string" } }
                        } },
                        "escalation": { "type": "object", "nullable": true, "required": ["to", "at", "fired"], "properties": {
                            "to": { "type": "string" }, "at": { "type": "integer" }, "fired": { "type": "boolean" }
                        } },
                        "at_deadline": { "type": "string", "nullable": true, "description": "What happens when the deadline passes" },
                        "options": { "type": "object", "description": "The gate's options as the workflow evaluated them" }
                    }
                },
                "Event": {
                    "type": "object",
                    "description": "One event of a run's timeline (`flowrt history RUN --json` shows the same)",
                    "required": ["seq", "at", "kind", "step", "attempt", "line", "duration_ms", "data"],
                    "properties": {
                        "seq": { "type": "integer" },
                        "at": { "type": "integer", "description": "Milliseconds since the Unix epoch" },
                        "kind": { "type": "string", "description": "run_started, step_completed, gate_decided, …" },
                        "step": { "type": "string", "nullable": true },
                        "attempt": { "type": "integer", "nullable": true },
                        "line": { "type": "integer", "nullable": true },
                        "duration_ms": { "type": "integer", "nullable": true },
                        "data": { "description": "The event's details" }
                    }
                },
                "Audit": {
                    "type": "object",
                    "required": ["run", "verified", "problem", "records"],
                    "properties": {
                        "run": { "type": "string" },
                        "verified": { "type": "boolean", "description": "Whether the run's keyed chain verifies" },
                        "problem": { "type": "string", "nullable": true, "description": "Why it does not" },
                        "records": { "type": "array", "description": "The records in the audit export's format (`at` is RFC 3339 text there)", "items": { "type": "object" } }
                    }
                },
                "SignalResult": {
                    "type": "object",
                    "required": ["run", "signal", "number", "taken_now", "run_status"],
                    "properties": {
                        "run": { "type": "string" },
                        "signal": { "type": "string" },
                        "number": { "type": "integer", "description": "The signal's number in the run, in the order received" },
                        "taken_now": { "type": "boolean", "description": "Whether the run was waiting for it; otherwise it is queued" },
                        "run_status": { "type": "string", "nullable": true }
                    }
                },
                "DecisionResult": {
                    "type": "object",
                    "required": ["decision", "remaining", "run_status"],
                    "properties": {
                        "decision": { "type": "string", "enum": ["closed", "recorded"] },
                        "remaining": { "type": "integer" },
                        "run_status": { "type": "string" }
                    }
                }
            }
        },
        "security": [{ "token": [] }],
        "paths": {
            "/health": { "get": {
                "operationId": "health",
                "summary": "Whether the server and its engine are up (no token needed)",
                "security": [],
                "responses": {
                    "200": json_response("Up", json!({ "type": "object", "properties": { "status": { "type": "string" } } })),
                    "503": error_response("Shutting down")
                }
            } },
            "/openapi.json": { "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": with_errors(json!({ "200": json_response("The OpenAPI document", json!({ "type": "object" })) }), &[])
            } },
            "/metrics": { "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": with_errors(json!({ "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } }), &[])
            } },
            "/api/me": { "get": {
                "operationId": "me",
                "summary": "The token's user and roles",
                "responses": with_errors(json!({ "200": json_response("Who you are", json!({
                    "type": "object", "required": ["user", "roles"],
                    "properties": { "user": { "type": "string" }, "roles": { "type": "array", "items": { "type": "string" } } }
                })) }), &[])
            } },
            "/api/workflows": { "get": {
                "operationId": "listWorkflows",
                "summary": "Workflows that can be started, with input and output JSON Schemas",
                "responses": with_errors(json!({ "200": json_response("The workflows", json!({ "type": "array", "items": {
                    "type": "object",
                    "required": ["name", "version", "input_schema", "output_schema", "may_start"],
                    "properties": {
                        "name": { "type": "string" }, "version": { "type": "string" },
                        "input_schema": { "type": "object" }, "output_schema": {},
                        "may_start": { "type": "boolean" }
                    }
                } })) }), &[])
            } },
            "/api/runs": {
                "get": {
                    "operationId": "listRuns",
                    "summary": "The runs the caller may read, newest first",
                    "parameters": [
                        { "name": "status", "in": "query", "description": "A status, or `needs_attention`: the runs an operator must look at (an undo block failed), whatever their status", "schema": { "type": "string", "enum": ["runnable", "waiting", "completed", "failed", "cancelled", "continued", "needs_attention"] } },
                        { "name": "workflow", "in": "query", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000 } }
                    ],
                    "responses": with_errors(json!({ "200": json_response("The runs", json!({ "type": "array", "items": { "$ref": "#/components/schemas/Run" } })) }), &[("400", "Bad query parameter")])
                },
                "post": {
                    "operationId": "startRun",
                    "summary": "Start a run (validated against the workflow's parameters) and drive it",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "required": ["workflow"],
                        "properties": { "workflow": { "type": "string" }, "input": { "type": "object" } }
                    } } } },
                    "responses": with_errors(json!({ "201": json_response("Started", json!({
                        "type": "object", "required": ["id", "status"],
                        "properties": { "id": { "type": "string" }, "status": { "type": "string" } }
                    })) }), &[
                        ("400", "Malformed body"),
                        ("403", "The user may not start this workflow"),
                        ("413", "The body is larger than 2 MiB"),
                        ("415", "The body is not sent as application/json"),
                        ("404", "No deployed workflow has this name"),
                        ("422", "The input does not fit the workflow's parameters")
                    ])
                }
            },
            "/api/runs/{id}": { "get": {
                "operationId": "getRun",
                "summary": "A run with its input, output, error and open gate",
                "parameters": [run_id.clone()],
                "responses": with_errors(json!({ "200": json_response("The run", json!({ "$ref": "#/components/schemas/RunDetail" })) }), &[("403", "The user may not read this run (see spec/server.md: its starter, its gates' deciders, the workflow's readers roles, role auditor)"), ("404", "No such run")])
            } },
            "/api/runs/{id}/history": { "get": {
                "operationId": "getHistory",
                "summary": "A run's timeline",
                "parameters": [run_id.clone()],
                "responses": with_errors(json!({ "200": json_response("The events", json!({ "type": "array", "items": { "$ref": "#/components/schemas/Event" } })) }), &[("403", "The user may not read this run (see spec/server.md: its starter, its gates' deciders, the workflow's readers roles, role auditor)"), ("404", "No such run")])
            } },
            "/api/runs/{id}/audit": { "get": {
                "operationId": "getAudit",
                "summary": "A run's audit trail with its hashes, and whether the chain verifies",
                "parameters": [run_id.clone()],
                "responses": with_errors(json!({ "200": json_response("The trail", json!({ "$ref": "#/components/schemas/Audit" })) }), &[("403", "The user may not read this run (see spec/server.md: its starter, its gates' deciders, the workflow's readers roles, role auditor)"), ("404", "No such run")])
            } },
            "/api/runs/{id}/cancel": { "post": {
                "operationId": "cancelRun",
                "summary": "Cancel a run that has not finished; its undo blocks run first unless `compensate` is false",
                "parameters": [run_id.clone()],
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "compensate": { "type": "boolean", "default": true } } } } } },
                "responses": with_errors(json!({ "200": json_response("Cancelled", json!({ "type": "object" })) }), &[
                    ("403", "Only who started the run or may start its workflow may cancel it"),
                    ("400", "`compensate` is not a boolean"),
                    ("404", "No such run"),
                    ("413", "The body is larger than 2 MiB"),
                    ("415", "The body is not sent as application/json"),
                    ("409", "The run has finished")
                ])
            } },
            "/api/runs/{id}/resolve": { "post": {
                "operationId": "resolveRun",
                "summary": "Record that what made the run need attention (an undo block that failed) was handled, with a note (role operator)",
                "parameters": [run_id.clone()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["note"], "properties": { "note": { "type": "string" } } } } } },
                "responses": with_errors(json!({ "200": json_response("Resolved", json!({ "type": "object" })) }), &[
                    ("403", "Only role operator may resolve a run"),
                    ("400", "No `note`, or not a string"),
                    ("404", "No such run"),
                    ("413", "The body is larger than 2 MiB"),
                    ("415", "The body is not sent as application/json"),
                    ("409", "The run needs no attention")
                ])
            } },
            "/api/decisions": { "get": {
                "operationId": "listDecisions",
                "summary": "The gates the caller may decide now",
                "responses": with_errors(json!({ "200": json_response("The open gates", json!({ "type": "array", "items": { "$ref": "#/components/schemas/Decision" } })) }), &[])
            } },
            "/api/runs/{id}/gates/{gate}/approve": { "post": {
                "operationId": "approve",
                "summary": "Approve a gate",
                "parameters": [run_id.clone(), gate.clone()],
                "requestBody": { "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "comment": { "type": "string" }, "view_hash": { "type": "string" } }
                } } } },
                "responses": with_errors(json!({ "200": decision_result.clone() }), decide_errors)
            } },
            "/api/runs/{id}/gates/{gate}/reject": { "post": {
                "operationId": "reject",
                "summary": "Reject a gate (a comment is required)",
                "parameters": [run_id.clone(), gate.clone()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["comment"],
                    "properties": { "comment": { "type": "string" }, "view_hash": { "type": "string" } }
                } } } },
                "responses": with_errors(json!({ "200": decision_result.clone() }), decide_errors)
            } },
            "/api/runs/{id}/queries/{name}": { "get": {
                "operationId": "runQuery",
                "summary": "Evaluate a query of a running run on its last durable point (read-only)",
                "parameters": [run_id.clone(), path_param("name", "The query's name, as the workflow declares it")],
                "responses": with_errors(json!({ "200": json_response("The query's value", json!({
                    "type": "object",
                    "required": ["run", "query", "value", "at"],
                    "properties": {
                        "run": { "type": "string" },
                        "query": { "type": "string" },
                        "value": { "description": "A value of the query's declared type" },
                        "at": { "type": "integer", "description": "When the state it read was committed (milliseconds since the epoch)" }
                    }
                })) }), &[
                    ("403", "The caller may not read this run"),
                    ("404", "No such run, or its workflow has no query of this name"),
                    ("409", "The run has finished or has not reached the query yet, or the query failed")
                ])
            } },
            "/api/runs/{id}/signals/{name}": { "post": {
                "operationId": "sendSignal",
                "summary": "Send a signal to a run: queued until the run waits for it, never lost",
                "parameters": [run_id.clone(), signal],
                "requestBody": { "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "value": { "description": "A value of the signal's declared type (none for a signal without one)" } }
                } } } },
                "responses": with_errors(json!({ "200": json_response("Queued, or taken by the waiting run", json!({ "$ref": "#/components/schemas/SignalResult" })) }), &[
                    ("400", "Malformed body"),
                    ("403", "The caller is not one of the signal's senders"),
                    ("404", "No such run, or its workflow accepts no signal of this name"),
                    ("409", "The run has finished"),
                    ("413", "The body is larger than 2 MiB"),
                    ("415", "The body is not sent as application/json"),
                    ("422", "The value does not fit the signal's type")
                ])
            } },
            "/api/runs/{id}/gates/{gate}/input": { "post": {
                "operationId": "provideInput",
                "summary": "Answer an input gate with a value of its type",
                "parameters": [run_id, gate],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["value"],
                    "properties": { "value": {}, "view_hash": { "type": "string" } }
                } } } },
                "responses": with_errors(json!({ "200": decision_result }), &[
                    ("400", "Malformed body"),
                    ("403", "The user may not answer this input"),
                    ("413", "The body is larger than 2 MiB"),
                    ("415", "The body is not sent as application/json"),
                    ("404", "No such run, or it does not wait at this input"),
                    ("409", "Stale view hash, already answered, timed out or finished"),
                    ("422", "The value does not fit the input's type")
                ])
            } }
        }
    })
}
