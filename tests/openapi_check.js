#!/usr/bin/env node
// Validates the server's OpenAPI document with @apidevtools/swagger-parser (the OpenAPI
// 3.0 JSON schema plus $ref resolution), then checks response bodies against the
// document's schemas: types, nullable, required, enums, bounds, allOf/anyOf/oneOf/not,
// and that every field a response carries is declared (additionalProperties: true
// allows undeclared fields by the letter of the schema, but a field the server returns
// and the document never names is a gap in the document).
//   node tests/openapi_check.js NODE_MODULES_DIR openapi.json [SchemaName=response.json ...]
// Exits 0 when everything conforms, 1 with the validator's messages otherwise, 2 on
// bad usage or a missing validator.
"use strict";
const fs = require("fs");
const path = require("path");

function usage(msg) {
  console.error(`openapi_check: ${msg}`);
  console.error("usage: node openapi_check.js NODE_MODULES_DIR openapi.json [SchemaName=response.json ...]");
  process.exit(2);
}

const [modules, docPath, ...samples] = process.argv.slice(2);
if (!modules || !docPath) usage("missing arguments");
let SwaggerParser;
try {
  SwaggerParser = require(path.join(path.resolve(modules), "@apidevtools", "swagger-parser"));
} catch (e) {
  usage(`@apidevtools/swagger-parser not found under ${modules} (tools/setup installs it): ${e.message}`);
}

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

// Property names an object schema declares, through allOf.
function declared(schema, out = new Set()) {
  if (schema.properties) Object.keys(schema.properties).forEach((k) => out.add(k));
  (schema.allOf || []).forEach((s) => declared(s, out));
  return out;
}

function hasDeclarations(schema) {
  return !!schema.properties || (schema.allOf || []).some(hasDeclarations);
}

// Problems of value v against OpenAPI 3.0 schema s (already dereferenced), at `where`.
// `top`: this schema, not a branch of an allOf/anyOf/oneOf/not, reports undeclared
// fields (over the union of its allOf branches).
function check(v, s, where, problems, top = true) {
  if (v === null) {
    // nullable: true admits null; so does a schema with no type at all.
    if (s.nullable || (!s.type && !s.allOf && !s.anyOf && !s.oneOf)) return problems;
    problems.push(`${where}: null is not allowed`);
    return problems;
  }
  const t = typeOf(v);
  if (s.type) {
    const ok = s.type === t || (s.type === "number" && t === "integer");
    if (!ok) {
      problems.push(`${where}: expected ${s.type}, got ${t} (${JSON.stringify(v).slice(0, 60)})`);
      return problems;
    }
  }
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v)))
    problems.push(`${where}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
  if (t === "number" || t === "integer") {
    if (s.minimum !== undefined && (s.exclusiveMinimum ? v <= s.minimum : v < s.minimum))
      problems.push(`${where}: ${v} is below the minimum ${s.minimum}`);
    if (s.maximum !== undefined && (s.exclusiveMaximum ? v >= s.maximum : v > s.maximum))
      problems.push(`${where}: ${v} is above the maximum ${s.maximum}`);
  }
  if (t === "string" && s.minLength !== undefined && v.length < s.minLength)
    problems.push(`${where}: shorter than ${s.minLength}`);
  if (t === "array") {
    if (s.minItems !== undefined && v.length < s.minItems) problems.push(`${where}: fewer than ${s.minItems} items`);
    if (s.maxItems !== undefined && v.length > s.maxItems) problems.push(`${where}: more than ${s.maxItems} items`);
    if (s.items) v.forEach((x, i) => check(x, s.items, `${where}[${i}]`, problems));
  }
  if (t === "object") {
    for (const r of s.required || []) if (!(r in v)) problems.push(`${where}: missing required field '${r}'`);
    const props = s.properties || {};
    for (const [k, x] of Object.entries(v)) {
      if (props[k]) check(x, props[k], `${where}.${k}`, problems);
      else if (s.additionalProperties === false) problems.push(`${where}: field '${k}' is not allowed`);
      else if (typeof s.additionalProperties === "object") check(x, s.additionalProperties, `${where}.${k}`, problems);
    }
    if (top && hasDeclarations(s)) {
      const names = declared(s);
      for (const k of Object.keys(v)) if (!names.has(k)) problems.push(`${where}: field '${k}' is not declared`);
    }
  }
  for (const sub of s.allOf || []) check(v, sub, where, problems, false);
  const matching = (list) => list.filter((b) => check(v, b, where, [], false).length === 0).length;
  if (s.anyOf && matching(s.anyOf) === 0) problems.push(`${where}: matches none of anyOf`);
  if (s.oneOf && matching(s.oneOf) !== 1) problems.push(`${where}: matches ${matching(s.oneOf)} of oneOf, not exactly 1`);
  if (s.not && check(v, s.not, where, [], false).length === 0) problems.push(`${where}: matches a 'not' schema`);
  return problems;
}

async function main() {
  const text = fs.readFileSync(docPath, "utf8");
  try {
    await SwaggerParser.validate(JSON.parse(text));
  } catch (e) {
    console.error(`openapi_check: ${docPath} is not a valid OpenAPI document:\n${e.message}`);
    process.exit(1);
  }
  const doc = await SwaggerParser.dereference(JSON.parse(text));
  const failures = [];
  for (const arg of samples) {
    const eq = arg.indexOf("=");
    if (eq < 0) usage(`'${arg}' is not SchemaName=file`);
    const name = arg.slice(0, eq), file = arg.slice(eq + 1);
    const schema = doc.components.schemas[name];
    if (!schema) usage(`no schema '${name}' in the document`);
    const body = JSON.parse(fs.readFileSync(file, "utf8"));
    for (const p of check(body, schema, `${name}(${path.basename(file)})`, [])) failures.push(p);
  }
  if (failures.length) {
    console.error(`openapi_check: ${failures.length} problem(s):\n  ${failures.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`openapi_check: document valid (OpenAPI ${doc.openapi}); ${samples.length} response(s) conform`);
}

main().catch((e) => {
  console.error(`openapi_check: ${e.stack || e}`);
  process.exit(1);
});
