//! The OpenAPI 3.1 document served at `/v1/openapi.json`. Written by hand
//! next to the router; `tests/e2e_*` check that every path it lists is
//! routed and that the documented status codes are the ones returned.

use serde_json::{Value, json};

fn err() -> Value {
    json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}})
}

fn bucket_param() -> Value {
    json!({"name": "bucket", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Stratus API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Deploy functions, invoke them, and read their invocations."},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness, answered by this server itself", "responses": {"200": {"description": "{status: ok, role: leader | standby | starting, leader?: URL} — a standby forwards every other request to the leader"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI document"}}}},
            "/v1/artifacts/{digest}": {
                "parameters": [{"name": "digest", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
                "put": {"summary": "Upload a wasm module or bundle archive under its sha256",
                        "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                        "responses": {"201": {"description": "stored"}, "400": err(), "413": err()}},
                "head": {"summary": "Whether an artifact is stored", "responses": {"200": {"description": "stored"}, "404": {"description": "not stored"}}}
            },
            "/v1/functions": {"get": {"summary": "List functions (latest version of each)",
                "responses": {"200": {"description": "functions", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"functions": {"type": "array", "items": {"$ref": "#/components/schemas/Function"}}}}}}}}}},
            "/v1/functions/{name}": {
                "parameters": [name_param()],
                "put": {"summary": "Deploy a new version of a function",
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeployRequest"}}}},
                        "responses": {"201": {"description": "deployed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Function"}}}},
                                      "400": err(), "413": err()}},
                "get": {"summary": "The latest version of a function",
                        "responses": {"200": {"description": "function", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Function"}}}}, "400": err(), "404": err()}},
                "delete": {"summary": "Delete a function (its invocations are kept)", "responses": {"204": {"description": "deleted"}, "400": err(), "404": err()}}
            },
            "/v1/functions/{name}/invoke": {
                "parameters": [name_param(), {"name": "async", "in": "query", "required": false, "schema": {"type": "boolean"}}],
                "post": {"summary": "Invoke a function with the request body as its input",
                         "description": "Synchronous by default: answers with the output bytes when the invocation finishes. With async=true, answers 202 with the invocation id once the invocation is durably queued.",
                         "requestBody": {"content": {"application/octet-stream": {}}},
                         "responses": {
                            "200": {"description": "succeeded; the body is the output", "headers": {"x-stratus-invocation-id": {"schema": {"type": "string"}}},
                                    "content": {"application/octet-stream": {}}},
                            "202": {"description": "accepted", "content": {"application/json": {"schema": {"type": "object", "properties": {"id": {"type": "string"}, "state": {"type": "string"}}}}}},
                            "400": err(), "404": err(), "413": err(),
                            "502": {"description": "the function failed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FunctionError"}}}},
                            "504": {"description": "the function timed out", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FunctionError"}}}}
                         }}
            },
            "/v1/invocations": {"get": {"summary": "List invocations, newest first",
                "parameters": [
                    {"name": "function", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "before", "in": "query", "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": {"description": "a page of invocations"}, "400": err()}}},
            "/v1/invocations/{id}": {"get": {"summary": "An invocation, with its attempts",
                "parameters": [id_param(), {"name": "wait", "in": "query", "description": "seconds to wait for the invocation to finish", "schema": {"type": "number"}}],
                "responses": {"200": {"description": "invocation", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Invocation"}}}}, "400": err(), "404": err()}}},
            "/v1/invocations/{id}/output": {"get": {"summary": "The output bytes of a succeeded invocation", "parameters": [id_param()],
                "responses": {"200": {"description": "output", "content": {"application/octet-stream": {}}}, "400": err(), "404": err(), "409": err()}}},
            "/v1/invocations/{id}/logs": {"get": {"summary": "The captured stderr of an invocation", "parameters": [id_param()],
                "responses": {"200": {"description": "logs", "content": {"text/plain": {}}}, "400": err(), "404": err()}}},
            "/v1/objects/{bucket}": {"get": {"summary": "List a bucket's objects",
                "parameters": [bucket_param(), {"name": "prefix", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "objects", "content": {"application/json": {"schema": {"type": "object",
                    "properties": {"objects": {"type": "array", "items": {"$ref": "#/components/schemas/Object"}}}}}}}, "400": err()}}},
            "/v1/objects/{bucket}/{key}": {
                "parameters": [bucket_param(), {"name": "key", "in": "path", "required": true, "description": "may contain '/'; no '.' or '..' segments", "schema": {"type": "string"}}],
                "put": {"summary": "Store an object (streamed)", "requestBody": {"content": {"application/octet-stream": {}}},
                        "responses": {"201": {"description": "stored"}, "400": err()}},
                "get": {"summary": "Read an object (streamed; Range: bytes=A-B gives 206)",
                        "responses": {"200": {"description": "the object", "content": {"application/octet-stream": {}}},
                                      "206": {"description": "a range"}, "400": err(), "404": err(), "416": err()}},
                "head": {"summary": "An object's size", "responses": {"200": {"description": "exists"}, "404": {"description": "missing"}}},
                "delete": {"summary": "Delete an object", "responses": {"204": {"description": "deleted"}, "400": err(), "404": err()}}
            },
            "/v1/jobs": {
                "post": {"summary": "Create a map (or map_reduce) job",
                         "description": "JSON body: {function, reduce?, inputs: [...]} or {function, reduce?, objects: 'bucket/prefix', chunk_size?}. Or an application/x-ndjson body of inputs, one JSON value per line, with function and reduce in the query.",
                         "parameters": [{"name": "function", "in": "query", "schema": {"type": "string"}}, {"name": "reduce", "in": "query", "schema": {"type": "string"}}],
                         "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}, "application/x-ndjson": {}}},
                         "responses": {"201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "400": err(), "404": err(), "413": err()}},
                "get": {"summary": "List jobs, newest first", "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}, {"name": "before", "in": "query", "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "jobs"}, "400": err()}}
            },
            "/v1/jobs/{id}": {"get": {"summary": "A job with its counters",
                "parameters": [id_param(), {"name": "wait", "in": "query", "schema": {"type": "number"}}, {"name": "failures", "in": "query", "description": "include up to N failed tasks", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "400": err(), "404": err()}}},
            "/v1/jobs/{id}/results": {"get": {"summary": "Task results in input order",
                "parameters": [id_param(), {"name": "from", "in": "query", "schema": {"type": "integer"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "a page of results (and the reducer's output)"}, "400": err(), "404": err()}}},
            "/v1/jobs/{id}/events": {"get": {"summary": "Progress as server-sent events until the job ends", "parameters": [id_param()],
                "responses": {"200": {"description": "text/event-stream of 'progress' events", "content": {"text/event-stream": {}}}, "400": err(), "404": err()}}},
            "/v1/jobs/{id}/cancel": {"post": {"summary": "Cancel a job: queued tasks never start, running ones are killed", "parameters": [id_param()],
                "responses": {"200": {"description": "cancelled"}, "400": err(), "404": err(), "409": err()}}},
            "/v1/workers": {
                "post": {"summary": "Register a worker", "requestBody": {"content": {"application/json": {"schema": {"type": "object",
                            "properties": {"name": {"type": "string"}, "host": {"type": "string"}, "slots": {"type": "integer"}}}}}},
                         "responses": {"201": {"description": "registered: {id, lease_timeout_ms, heartbeat_ms, objects?, broker?} — objects: the object store URL with its credentials, when workers should read it directly (S3); broker: {url, queue}, when the server dispatches through RabbitMQ and workers should consume that queue instead of leasing"}, "400": err()}},
                "get": {"summary": "List workers", "responses": {"200": {"description": "workers with host, slots, running, last heartbeat, state"}}}
            },
            "/v1/workers/{id}": {"delete": {"summary": "Deregister a worker that stopped cleanly (its completions delivered)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "deregistered"}, "404": err(), "409": err()}}},
            "/v1/workers/{id}/heartbeat": {"post": {"summary": "Keep a worker's leases; answers the ids of its tasks to cancel",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{cancel: [ids]}"}, "410": err()}}},
            "/v1/workers/{id}/lease": {"post": {"summary": "Lease up to max tasks, waiting up to wait_ms for one",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"max": {"type": "integer"}, "wait_ms": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "{tasks: [...]}"}, "400": err(), "410": err()}}},
            "/v1/workers/{id}/complete": {"post": {"summary": "Report attempt ends (a duplicate or late one changes nothing)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"completions": {"type": "array"}}}}}},
                "responses": {"204": {"description": "accepted"}, "400": err()}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "Runtime": {"oneOf": [
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "wasm"}}},
                {"type": "object", "required": ["kind", "cmd"], "properties": {"kind": {"const": "process"}, "cmd": {"type": "string"}, "warm": {"type": "boolean"}}}]},
            "DeployRequest": {"type": "object", "required": ["runtime", "artifact"], "additionalProperties": false, "properties": {
                "runtime": {"$ref": "#/components/schemas/Runtime"},
                "artifact": {"type": "string", "description": "sha256 of an uploaded artifact"},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "timeout_ms": {"type": "integer", "minimum": 1},
                "memory_mb": {"type": "integer", "minimum": 1},
                "retries": {"type": "integer", "minimum": 0, "maximum": 100}}},
            "Function": {"type": "object", "properties": {
                "name": {"type": "string"}, "project": {"type": "string"}, "version": {"type": "integer"},
                "runtime": {"$ref": "#/components/schemas/Runtime"}, "artifact": {"type": "string"},
                "env": {"type": "object"}, "timeout_ms": {"type": "integer"}, "memory_mb": {"type": "integer"},
                "retries": {"type": "integer"}, "created_at": {"type": "integer", "description": "ms since the epoch"}}},
            "Failure": {"type": "object", "properties": {"kind": {"enum": ["exit", "trap", "timeout", "out_of_memory", "output_limit", "internal", "lost", "cancelled"]},
                "message": {"type": "string"}, "exit_code": {"type": "integer"}}},
            "Invocation": {"type": "object", "properties": {
                "id": {"type": "string"}, "project": {"type": "string"}, "function": {"type": "string"}, "version": {"type": "integer"},
                "state": {"enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]},
                "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "queued_at": {"type": "integer"}, "started_at": {"type": "integer"}, "finished_at": {"type": "integer"},
                "worker": {"type": "string"}, "error": {"$ref": "#/components/schemas/Failure"},
                "attempt_history": {"type": "array", "items": {"type": "object"}}}},
            "Object": {"type": "object", "properties": {"key": {"type": "string"}, "size": {"type": "integer"}, "last_modified": {"type": "integer"}}},
            "JobRequest": {"type": "object", "required": ["function"], "additionalProperties": false, "properties": {
                "function": {"type": "string"}, "reduce": {"type": "string"},
                "inputs": {"type": "array", "description": "each value's JSON text is a task's stdin"},
                "objects": {"type": "string", "description": "bucket/prefix"}, "chunk_size": {"type": "integer", "minimum": 1}}},
            "Job": {"type": "object", "properties": {
                "id": {"type": "string"}, "function": {"type": "string"}, "version": {"type": "integer"},
                "reduce_function": {"type": "string"}, "state": {"enum": ["running", "reducing", "succeeded", "failed", "cancelled"]},
                "total": {"type": "integer"}, "succeeded": {"type": "integer"}, "failed": {"type": "integer"}, "cancelled": {"type": "integer"},
                "running": {"type": "integer"}, "queued": {"type": "integer"},
                "created_at": {"type": "integer"}, "finished_at": {"type": "integer"}, "reduce_invocation": {"type": "string"}, "error": {"type": "string"}}},
            "FunctionError": {"type": "object", "properties": {
                "error": {"type": "object"}, "invocation": {"$ref": "#/components/schemas/Invocation"}, "logs_tail": {"type": "string"}}}
        }}
    })
}
