//! The OpenAPI 3.1 description of the backend API, served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

pub fn document() -> Value {
    let record = json!({ "$ref": "#/components/schemas/Message" });
    let id_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" }, "description": "ebMS MessageId" });
    let error = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Ventanilla backend API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "How a national single window submits documents to its AS4 access point and collects what partners sent." },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/v1/messages": {
                "post": {
                    "summary": "Submit a message to a partner",
                    "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                        "type": "object", "required": ["metadata", "payload"],
                        "properties": {
                            "metadata": { "$ref": "#/components/schemas/SubmitMetadata" },
                            "payload": { "type": "array", "items": { "type": "string", "format": "binary" } }
                        } } } } },
                    "responses": { "202": { "description": "accepted and durable; it will be sent", "content": { "application/json": { "schema": record } } },
                                   "400": error, "401": error, "422": error, "503": error }
                },
                "get": {
                    "summary": "List messages (the outbound queue with next attempts, or received messages)",
                    "parameters": [
                        { "name": "direction", "in": "query", "schema": { "enum": ["outbound", "inbound"] } },
                        { "name": "state", "in": "query", "schema": { "$ref": "#/components/schemas/State" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 100 } }
                    ],
                    "responses": { "200": { "description": "messages, newest first", "content": { "application/json": { "schema": { "type": "array", "items": record } } } }, "401": error }
                }
            },
            "/api/v1/messages/{id}": { "get": { "summary": "Status and history of a submitted message", "parameters": [id_param],
                "responses": { "200": { "description": "the message", "content": { "application/json": { "schema": record } } }, "404": error, "401": error } } },
            "/api/v1/inbox": { "get": { "summary": "Received messages not yet acknowledged",
                "parameters": [ { "name": "all", "in": "query", "schema": { "type": "boolean" } }, { "name": "limit", "in": "query", "schema": { "type": "integer" } } ],
                "responses": { "200": { "description": "received messages", "content": { "application/json": { "schema": { "type": "array", "items": record } } } }, "401": error } } },
            "/api/v1/inbox/{id}": { "get": { "summary": "A received message", "parameters": [id_param],
                "responses": { "200": { "description": "the message", "content": { "application/json": { "schema": record } } }, "404": error, "401": error } } },
            "/api/v1/inbox/{id}/payloads/{index}": { "get": { "summary": "Download a received payload (index from 1)",
                "parameters": [id_param, { "name": "index", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } }],
                "responses": { "200": { "description": "the payload bytes, as received", "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } } }, "404": error, "401": error } } },
            "/api/v1/events": { "get": { "summary": "Message events, exactly one per lifecycle transition, oldest first; poll with after = the last next",
                "parameters": [ { "name": "after", "in": "query", "schema": { "type": "integer", "default": 0 } }, { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 500 } } ],
                "responses": { "200": { "description": "events and the id to continue after", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "next": { "type": "integer" },
                    "events": { "type": "array", "items": { "type": "object", "properties": {
                        "id": { "type": "integer" }, "at": { "type": "string" }, "message_id": { "type": "string" },
                        "direction": { "enum": ["outbound", "inbound"] },
                        "event": { "$ref": "#/components/schemas/LifecycleEvent" },
                        "from": { "oneOf": [{ "$ref": "#/components/schemas/State" }, { "type": "null" }], "description": "the state before; null when the message was created" },
                        "state": { "$ref": "#/components/schemas/State" }, "detail": { "type": "string" },
                        "partner": { "type": "string" }, "pmode": { "type": "string" }, "leg": { "type": "string" } } } } } } } } }, "401": error } } },
            "/api/v1/inbox/{id}/ack": { "post": { "summary": "Acknowledge a received message (it leaves the inbox)", "parameters": [id_param],
                "responses": { "200": { "description": "the message, acknowledged", "content": { "application/json": { "schema": record } } }, "404": error, "401": error } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "State": { "enum": crate::lifecycle::State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
                "LifecycleEvent": { "enum": crate::lifecycle::EVENT_NAMES },
                "PartnerError": { "type": "object", "description": "the partner's last error signal; verified = its signature checked out (an unverified one is shown, never trusted as a refusal)",
                    "properties": { "code": { "type": "string" }, "severity": { "enum": ["failure", "warning"] },
                                    "description": { "type": "string" }, "verified": { "type": "boolean" } } },
                "Error": { "type": "object", "properties": { "error": { "type": "string" } } },
                "SubmitMetadata": { "type": "object", "required": ["to", "leg"], "properties": {
                    "to": { "type": "string", "description": "partner party id" },
                    "leg": { "type": "string", "description": "leg name or action in the link's P-Mode" },
                    "conversation_id": { "type": "string" },
                    "properties": { "type": "object", "additionalProperties": { "type": "string" } } } },
                "Payload": { "type": "object", "properties": {
                    "content_id": { "type": "string" }, "mime_type": { "type": "string" }, "size": { "type": "integer" },
                    "sha256": { "type": "string" }, "filename": { "type": ["string", "null"] } } },
                "Message": { "type": "object", "properties": {
                    "direction": { "enum": ["outbound", "inbound"] }, "message_id": { "type": "string" },
                    "conversation_id": { "type": "string" }, "pmode": { "type": "string" }, "leg": { "type": "string" },
                    "partner": { "type": "string" }, "service": { "type": "string" }, "action": { "type": "string" },
                    "state": { "$ref": "#/components/schemas/State" }, "attempts": { "type": "integer" },
                    "next_attempt_at": { "type": ["string", "null"] }, "created_at": { "type": "string" },
                    "updated_at": { "type": "string" }, "error": { "type": ["string", "null"] },
                    "partner_error": { "oneOf": [{ "$ref": "#/components/schemas/PartnerError" }, { "type": "null" }] },
                    "payloads": { "type": "array", "items": { "$ref": "#/components/schemas/Payload" } },
                    "history": { "type": "array", "items": { "type": "object", "properties": {
                        "at": { "type": "string" }, "state": { "$ref": "#/components/schemas/State" },
                        "event": { "type": ["string", "null"], "description": "the lifecycle event; null for a note (a duplicate received, retention)" },
                        "detail": { "type": "string" } } } } } }
            }
        }
    })
}
