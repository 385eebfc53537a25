//! The OpenAPI 3.1 description of the backend API, served at `/api/v1/openapi.json`: every
//! path, status code, error body, constraint and enum the code has (`tests/schemathesis.rs`
//! runs schemathesis with every check against it).

use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The statuses every protected call may answer besides its own.
fn common(mut responses: Value) -> Value {
    let map = responses.as_object_mut().expect("an object");
    map.insert("400".into(), error("a malformed query, path or body (the text says which)"));
    map.insert("401".into(), error("missing or wrong bearer token"));
    map.insert("503".into(), error("the message store is unavailable; retry later"));
    responses
}

pub fn document() -> Value {
    let record = json!({ "$ref": "#/components/schemas/Message" });
    let records = json!({ "type": "array", "items": record });
    let id_param = json!({ "name": "id", "in": "path", "required": true, "description": "ebMS MessageId",
        "schema": { "type": "string", "minLength": 1, "maxLength": 1024 } });
    let index_param = json!({ "name": "index", "in": "path", "required": true, "description": "payload number, from 1",
        "schema": { "type": "integer", "minimum": 1, "maximum": 64 } });
    let direction_param = json!({ "name": "direction", "in": "query", "description": "which side's message (default: outbound, else inbound)",
        "schema": { "$ref": "#/components/schemas/Direction" } });
    let text = |name: &str, description: &str| json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string", "minLength": 1, "maxLength": 1024 } });
    let date = |name: &str, description: &str| {
        json!({ "name": name, "in": "query", "description": description,
        "schema": { "anyOf": [{ "type": "string", "format": "date" }, { "type": "string", "format": "date-time" }] } })
    };
    let filters = vec![
        json!({ "name": "direction", "in": "query", "schema": { "$ref": "#/components/schemas/Direction" } }),
        json!({ "name": "state", "in": "query", "schema": { "$ref": "#/components/schemas/State" } }),
        text("partner", "partner party id"),
        text("message_id", "ebMS MessageId"),
        text("conversation_id", "ebMS ConversationId"),
        text("leg", "leg name in the P-Mode"),
        text("service", "ebMS Service"),
        text("action", "ebMS Action"),
        text("document_number", "the certificate number the payload handler read"),
        date("from", "created at or after: YYYY-MM-DD (UTC, that day included) or an RFC 3339 time"),
        date("to", "created before: YYYY-MM-DD (UTC, that day included) or an RFC 3339 time"),
        json!({ "name": "cursor", "in": "query", "description": "the X-Next-Cursor of the previous page", "schema": { "type": "integer", "minimum": 0, "maximum": i64::MAX } }),
        json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }),
    ];
    let page_headers = json!({
        "X-Next-Cursor": { "description": "present when there is a next page: pass it as `cursor`", "schema": { "type": "string" } },
        "Link": { "description": "the next page, rel=\"next\"", "schema": { "type": "string" } }
    });
    let list = |summary: &str, extra: Vec<Value>| {
        let mut parameters = filters.clone();
        parameters.extend(extra);
        json!({ "summary": summary, "parameters": parameters,
            "responses": common(json!({ "200": { "description": "one page, newest first", "headers": page_headers.clone(),
                "content": { "application/json": { "schema": records.clone() } } } })) })
    };
    let xml = |description: &str| json!({ "description": description, "content": { "application/soap+xml": { "schema": { "type": "string" } } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Ventanilla backend API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "How a national single window submits documents to its AS4 access point and collects what partners sent. Every error body is JSON: {\"error\": \"what went wrong and what to do\"}." },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/v1/messages": {
                "post": {
                    "summary": "Submit a message to a partner",
                    "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                        "type": "object", "required": ["metadata", "payload"], "additionalProperties": false,
                        "properties": {
                            "metadata": { "$ref": "#/components/schemas/SubmitMetadata" },
                            "payload": { "type": "array", "minItems": 1, "maxItems": 64, "items": { "type": "string", "format": "binary" } }
                        } } } } },
                    "responses": common(json!({
                        "202": ok_json("accepted and durable; it will be sent", record.clone()),
                        "413": error("the request, a payload or the metadata is larger than allowed"),
                        "422": error("the P-Mode or the payload handler refuses it (the text says why)") }))
                },
                "get": list("Messages in both directions with the console's filters, cursor paging", vec![])
            },
            "/api/v1/messages/{id}": { "get": { "summary": "A message (either direction): state, attempts, history, payloads, the partner's error",
                "parameters": [id_param, direction_param],
                "responses": common(json!({ "200": ok_json("the message", record.clone()), "404": error("no such message") })) } },
            "/api/v1/messages/{id}/payloads/{index}": { "get": { "summary": "A payload, as submitted or as received (never the ciphertext)",
                "parameters": [id_param, index_param, direction_param],
                "responses": common(json!({
                    "200": { "description": "the payload bytes; X-SHA256 carries their digest", "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } } },
                    "404": error("no such message or payload"), "410": error("removed by retention") })) } },
            "/api/v1/messages/{id}/envelope": { "get": { "summary": "The SOAP envelope as sent or received",
                "parameters": [id_param, direction_param],
                "responses": common(json!({ "200": xml("the envelope"), "404": error("no such message"), "410": error("removed by retention") })) } },
            "/api/v1/messages/{id}/signal": { "get": { "summary": "The receipt or error: the partner's (outbound), ours (inbound)",
                "parameters": [id_param, direction_param],
                "responses": common(json!({ "200": xml("the signal"), "404": error("no such message, or no signal stored") })) } },
            "/api/v1/messages/{id}/evidence": { "get": { "summary": "An evidence bundle for a dispute; `ventanilla verify BUNDLE` checks it offline",
                "parameters": [id_param, direction_param],
                "responses": common(json!({ "200": ok_json("the bundle", json!({ "$ref": "#/components/schemas/Evidence" })),
                    "404": error("no such message"), "410": error("removed by retention") })) } },
            "/api/v1/messages/{id}/resend": { "post": { "summary": "Resend a failed outbound message: the identical envelope, or under a new MessageId",
                "parameters": [id_param],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["mode"], "additionalProperties": false,
                    "properties": { "mode": { "enum": ["identical", "new_message_id"] } } } } } },
                "responses": common(json!({
                    "200": ok_json("on its way", json!({ "type": "object", "properties": { "message_id": { "type": "string" }, "resent": { "type": "string" } } })),
                    "404": error("no such outbound message"), "409": error("the message is not failed"),
                    "422": error("it cannot be resent (its P-Mode was unloaded, its payloads removed)") })) } },
            "/api/v1/inbox": { "get": list("Received messages not yet acknowledged (all=true: every received message)",
                vec![json!({ "name": "all", "in": "query", "schema": { "type": "boolean", "default": false } })]) },
            "/api/v1/inbox/{id}": { "get": { "summary": "A received message", "parameters": [id_param],
                "responses": common(json!({ "200": ok_json("the message", record.clone()), "404": error("no such received message") })) } },
            "/api/v1/inbox/{id}/payloads/{index}": { "get": { "summary": "A received payload (index from 1)",
                "parameters": [id_param, index_param],
                "responses": common(json!({
                    "200": { "description": "the payload bytes; X-SHA256 carries their digest", "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } } },
                    "404": error("no such message or payload"), "410": error("removed by retention") })) } },
            "/api/v1/inbox/{id}/ack": { "post": { "summary": "Acknowledge a received message (it leaves the inbox); idempotent", "parameters": [id_param],
                "responses": common(json!({ "200": ok_json("the message, acknowledged", record.clone()), "404": error("no such received message") })) } },
            "/api/v1/events": { "get": { "summary": "Message events, exactly one per lifecycle transition, oldest first; long poll with wait",
                "parameters": [
                    { "name": "after", "in": "query", "description": "the last event id seen (the previous answer's next)", "schema": { "type": "integer", "minimum": 0, "maximum": i64::MAX, "default": 0 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 500 } },
                    { "name": "wait", "in": "query", "description": "with nothing new, wait up to this long for an event (e.g. 30s; at most 60s)", "schema": { "type": "string", "pattern": "^([0-9]{1,5}ms|[0-5]?[0-9]s|60s|1m)$" } } ],
                "responses": common(json!({ "200": ok_json("events and the id to continue after", json!({ "type": "object", "required": ["events", "next"], "properties": {
                    "next": { "type": "integer" },
                    "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } } } })) })) } },
            "/health": { "get": { "summary": "Readiness (the same as /health/ready)", "security": [],
                "responses": { "200": ok_json("ready", json!({ "$ref": "#/components/schemas/Readiness" })), "503": ok_json("not ready", json!({ "$ref": "#/components/schemas/Readiness" })) } } },
            "/health/ready": { "get": { "summary": "Ready: the store answers, disk space, P-Modes loaded, own keys valid", "security": [],
                "responses": { "200": ok_json("ready", json!({ "$ref": "#/components/schemas/Readiness" })), "503": ok_json("not ready", json!({ "$ref": "#/components/schemas/Readiness" })) } } },
            "/health/live": { "get": { "summary": "The process answers", "security": [],
                "responses": { "200": ok_json("alive", json!({ "type": "object", "properties": { "status": { "const": "live" } } })) } } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": ok_json("the OpenAPI document", json!({ "type": "object" })) } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Direction": { "enum": ["outbound", "inbound"] },
                "State": { "enum": crate::lifecycle::State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
                "LifecycleEvent": { "enum": crate::lifecycle::EVENT_NAMES },
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string", "minLength": 1 } } },
                "PartnerError": { "type": "object", "description": "the partner's last error signal; verified = its signature checked out (an unverified one is shown, never trusted as a refusal)",
                    "properties": { "code": { "type": "string" }, "severity": { "enum": ["failure", "warning"] },
                                    "description": { "type": "string" }, "verified": { "type": "boolean" } } },
                "SubmitMetadata": { "type": "object", "required": ["to", "leg"], "additionalProperties": false, "properties": {
                    "to": { "type": "string", "minLength": 1, "maxLength": 1024, "description": "partner party id" },
                    "leg": { "type": "string", "minLength": 1, "maxLength": 1024, "description": "leg name or action in the link's P-Mode" },
                    "conversation_id": { "type": "string", "maxLength": 1024 },
                    "properties": { "type": "object", "additionalProperties": { "anyOf": [
                        { "type": "string", "maxLength": 1024 },
                        { "type": "object", "required": ["value"], "additionalProperties": false, "properties": { "value": { "type": "string", "maxLength": 1024 }, "type": { "type": "string", "maxLength": 1024 } } } ] } } } },
                "Payload": { "type": "object", "properties": {
                    "content_id": { "type": "string" }, "mime_type": { "type": "string" },
                    "size": { "type": "integer", "minimum": 0, "description": "the original size (not the compressed or encrypted one)" },
                    "sha256": { "type": "string", "description": "of the original bytes" }, "filename": { "type": ["string", "null"] } } },
                "HistoryEntry": { "type": "object", "properties": {
                    "at": { "type": "string" }, "state": { "$ref": "#/components/schemas/State" },
                    "event": { "type": ["string", "null"], "description": "the lifecycle event; null for a note (a duplicate received, a resubmission)" },
                    "detail": { "type": "string" } } },
                "Message": { "type": "object", "properties": {
                    "direction": { "$ref": "#/components/schemas/Direction" }, "message_id": { "type": "string" },
                    "conversation_id": { "type": "string" }, "pmode": { "type": "string" }, "leg": { "type": "string" },
                    "partner": { "type": "string" }, "service": { "type": "string" }, "action": { "type": "string" },
                    "transport": { "type": "string", "enum": ["as4", "iop"], "description": "AS4, or the legacy Pacific Alliance IOP service" },
                    "state": { "$ref": "#/components/schemas/State" }, "attempts": { "type": "integer", "minimum": 0 },
                    "next_attempt_at": { "type": ["string", "null"] }, "created_at": { "type": "string" },
                    "updated_at": { "type": "string" }, "error": { "type": ["string", "null"] },
                    "partner_error": { "oneOf": [{ "$ref": "#/components/schemas/PartnerError" }, { "type": "null" }] },
                    "document": { "type": ["object", "null"], "description": "what the payload handler read: kind, number, status, countries…" },
                    "payloads": { "type": "array", "items": { "$ref": "#/components/schemas/Payload" } },
                    "history": { "type": "array", "items": { "$ref": "#/components/schemas/HistoryEntry" } } } },
                "Event": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "at": { "type": "string" }, "message_id": { "type": "string" },
                    "direction": { "$ref": "#/components/schemas/Direction" },
                    "event": { "$ref": "#/components/schemas/LifecycleEvent" },
                    "from": { "oneOf": [{ "$ref": "#/components/schemas/State" }, { "type": "null" }], "description": "the state before; null when the message was created" },
                    "state": { "$ref": "#/components/schemas/State" }, "detail": { "type": "string" },
                    "partner": { "type": "string" }, "pmode": { "type": "string" }, "leg": { "type": "string" } } },
                "Evidence": { "type": "object", "required": ["format", "message_id", "envelope"], "properties": {
                    "format": { "const": crate::evidence::FORMAT }, "message_id": { "type": "string" },
                    "direction": { "$ref": "#/components/schemas/Direction" },
                    "envelope": { "type": "string", "contentEncoding": "base64" }, "signal": { "type": ["string", "null"], "contentEncoding": "base64" },
                    "sender_certificates": { "type": "array", "items": { "type": "string" } },
                    "receiver_certificates": { "type": "array", "items": { "type": "string" } },
                    "ca_certificates": { "type": "array", "items": { "type": "string" } },
                    "report": { "type": "array", "items": { "type": "string" } } } },
                "Readiness": { "type": "object", "required": ["ready", "components"], "properties": {
                    "ready": { "type": "boolean" },
                    "components": { "type": "array", "items": { "type": "object", "properties": {
                        "name": { "enum": ["store", "disk", "pmodes", "keys"] }, "ok": { "type": "boolean" }, "detail": { "type": "string" } } } } } }
            }
        }
    })
}
