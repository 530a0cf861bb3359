// The openai Node SDK against the gateway: one case per run, named by argv[2].
//
//   text        responses.create, non-streaming: a completed message with output_text
//   stream      responses.stream (the SDK's accumulating helper, which throws on events
//               out of order): event types and order, sequence numbers, deltas == final text
//   tool        responses.parse with a zodResponsesFunction tool forced by tool_choice:
//               one function_call whose parsed_arguments the SDK parsed from the wire
//   structured  responses.parse with zodTextFormat (json_schema, strict): output_parsed
//   reasoning   a stateless (store: false) turn streamed with reasoning.summary and
//               encrypted reasoning, then the next turn with its output sent back as input
//               (the prompts are the scripted engine's: '[[think]]' makes it reason)
//
// Env: GATEWAY_BASE_URL (http://host:port/v1), GATEWAY_API_KEY, GATEWAY_MODEL.
// Prints one JSON summary on stdout; any failed check or SDK error exits non-zero.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodResponsesFunction, zodTextFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { runCase } from './run_case.mjs';

const client = new OpenAI({
  baseURL: process.env.GATEWAY_BASE_URL,
  apiKey: process.env.GATEWAY_API_KEY ?? 'unused',
  maxRetries: 0,
});
const model = process.env.GATEWAY_MODEL ?? 'default';
const common = { model, temperature: 0, max_output_tokens: 16 };

const Weather = z.object({ city: z.string() });
const Person = z.object({ name: z.string(), age: z.number().int() });

async function text() {
  const response = await client.responses.create({ ...common, input: 'Say hello.' });
  const [message] = response.output.filter((item) => item.type === 'message');
  assert.equal(message.content[0].type, 'output_text');
  assert.equal(response.output_text, message.content[0].text);
  return { id: response.id, status: response.status, text: response.output_text, usage: response.usage };
}

async function stream() {
  const stream = client.responses.stream({ ...common, input: 'Say hello.' });
  const events = [];
  let deltas = '';
  for await (const event of stream) {
    events.push({ type: event.type, sequence_number: event.sequence_number });
    if (event.type === 'response.output_text.delta') deltas += event.delta;
  }
  const final = await stream.finalResponse();
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 2), ['response.created', 'response.in_progress']);
  assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)), types.at(-1));
  events.forEach((e, i) => assert.equal(e.sequence_number, i, `sequence_number at ${i}`));
  assert.equal(final.output_text, deltas);
  const done = events.findIndex((e) => e.type === 'response.output_text.done');
  assert.ok(done > types.indexOf('response.output_text.delta'), 'text done after its deltas');
  return { id: final.id, status: final.status, text: final.output_text, deltas, types };
}

async function tool() {
  const weather = zodResponsesFunction({ name: 'get_weather', description: 'Current weather in a city.',
    parameters: Weather });
  const response = await client.responses.parse({
    ...common, max_output_tokens: 64, input: 'What is the weather in Paris?',
    tools: [weather], tool_choice: { type: 'function', name: 'get_weather' }, parallel_tool_calls: false,
  });
  const calls = response.output.filter((item) => item.type === 'function_call');
  assert.equal(calls.length, 1, JSON.stringify(response.output));
  const [call] = calls;
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(call.parsed_arguments, Weather.parse(JSON.parse(call.arguments)));
  return { id: response.id, status: response.status, call: { ...call } };
}

async function structured() {
  const response = await client.responses.parse({
    ...common, max_output_tokens: 48, input: 'Invent a person: name and age, as JSON.',
    text: { format: zodTextFormat(Person, 'person') },
  });
  assert.ok(response.output_parsed, 'output_parsed');
  assert.deepEqual(response.output_parsed, Person.parse(JSON.parse(response.output_text)));
  return { id: response.id, status: response.status, text: response.output_text, parsed: response.output_parsed,
           format: response.text.format };
}

async function reasoning() {
  const ask = { model, max_output_tokens: 64, store: false, reasoning: { summary: 'auto' },
                include: ['reasoning.encrypted_content'] };
  const stream = client.responses.stream({ ...ask, input: '[[think]]' });
  const types = []; // repeats of one type collapsed
  let summary = '';
  for await (const event of stream) {
    if (types.at(-1) !== event.type) types.push(event.type);
    if (event.type === 'response.reasoning_summary_text.delta') summary += event.delta;
  }
  const first = await stream.finalResponse();
  const [item] = first.output.filter((i) => i.type === 'reasoning');
  assert.deepEqual(item.summary, [{ type: 'summary_text', text: summary }]);
  assert.ok(item.encrypted_content, 'no encrypted_content');
  const second = await client.responses.create({
    ...ask, input: [{ role: 'user', content: '[[think]]' }, ...first.output, { role: 'user', content: 'And now?' }],
  });
  return { types, summary, text: first.output_text, second: second.output_text,
           items: first.output.map((i) => i.type) };
}

const cases = { text, stream, tool, structured, reasoning };
await runCase('openai_sdk.mjs', cases);
