// The Vercel AI SDK (`ai` with `@ai-sdk/openai`'s Responses provider, `openai.responses(model)`)
// against the gateway: one case per run, named by argv[2].
//
//   text    generateText: text, finish reason, usage, the response id
//   stream  streamText with raw chunks: the SDK's parts (no error part, text deltas == text)
//           and the wire events under them (sequence numbers 0, 1, 2, ...)
//   tool    generateText with one tool forced by toolChoice {type: 'tool'}: the SDK parsed
//           and validated the call's input with the tool's zod schema and ran the tool
//   object  generateText with Output.object (json_schema, strict): the parsed object
//   reasoning  streamText with reasoning summaries and store: false (the SDK asks for
//           encrypted reasoning), then generateText with the first turn's response.messages
//           in the history: the SDK sends the reasoning item back
//   chat    generateText, then the next turn by providerOptions.openai.previousResponseId
//           (the prompts of these two are the scripted engine's: '[[think]]' makes it reason)
//   history generateText, then the next turn with the first turn's response.messages in the
//           history and store left at its default (true): the SDK sends the earlier reasoning
//           and text as item_reference items (the request bodies are recorded to show it)
//
// The provider validates every response body and stream chunk against its own schemas, so a
// field it cannot read fails the run. Env: GATEWAY_BASE_URL, GATEWAY_API_KEY, GATEWAY_MODEL.
// Prints one JSON summary on stdout; any failed check or SDK error exits non-zero.
import assert from 'node:assert/strict';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, Output, streamText, tool as defineTool } from 'ai';
import { z } from 'zod';
import { runCase } from './run_case.mjs';

const provider = createOpenAI({ baseURL: process.env.GATEWAY_BASE_URL, apiKey: process.env.GATEWAY_API_KEY ?? 'unused' });
const model = provider.responses(process.env.GATEWAY_MODEL ?? 'default');
const common = { model, temperature: 0, maxOutputTokens: 16, maxRetries: 0 };

const Person = z.object({ name: z.string(), age: z.number().int() });

function summary(result) {
  return { id: result.response.id, finishReason: result.finishReason, usage: result.usage, warnings: result.warnings,
           responseId: result.providerMetadata?.openai?.responseId };
}

async function text() {
  const result = await generateText({ ...common, prompt: 'Say hello.' });
  assert.ok(result.text.length > 0, 'empty text');
  return { ...summary(result), text: result.text };
}

async function stream() {
  const errors = [];
  const result = streamText({ ...common, prompt: 'Say hello.', includeRawChunks: true,
                              onError: ({ error }) => errors.push(String(error)) });
  const parts = []; // the SDK's part types in order, repeats of one type collapsed
  const wire = [];
  let deltas = '';
  for await (const part of result.fullStream) {
    if (part.type !== 'raw' && parts.at(-1) !== part.type) parts.push(part.type);
    if (part.type === 'text-delta') deltas += part.text;
    if (part.type === 'raw') wire.push({ type: part.rawValue.type, sequence_number: part.rawValue.sequence_number });
  }
  assert.deepEqual(errors, []);
  assert.ok(!parts.includes('error'), parts.join());
  const textValue = await result.text;
  assert.equal(textValue, deltas);
  assert.ok(textValue.length > 0, 'empty text');
  wire.forEach((e, i) => assert.equal(e.sequence_number, i, `sequence_number at ${i}`));
  const finishReason = await result.finishReason;
  return { finishReason, usage: await result.usage, text: textValue, deltas, parts,
           wire: wire.map((e) => e.type), responseId: (await result.providerMetadata)?.openai?.responseId };
}

async function tool() {
  const seen = [];
  const result = await generateText({
    ...common, maxOutputTokens: 64, prompt: 'What is the weather in Paris?',
    tools: {
      get_weather: defineTool({
        description: 'Current weather in a city.',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => { seen.push(city); return `sunny, 21C in ${city}`; },
      }),
    },
    toolChoice: { type: 'tool', toolName: 'get_weather' },
    providerOptions: { openai: { parallelToolCalls: false } },
  });
  assert.equal(result.toolCalls.length, 1, JSON.stringify(result.content));
  const [call] = result.toolCalls;
  assert.equal(call.toolName, 'get_weather');
  assert.ok(!call.invalid, `invalid tool call: ${call.error}`);
  assert.deepEqual(seen, [call.input.city]);
  assert.equal(result.toolResults[0].output, `sunny, 21C in ${call.input.city}`);
  return { ...summary(result), call: { toolCallId: call.toolCallId, toolName: call.toolName, input: call.input },
           toolResult: result.toolResults[0].output };
}

async function object() {
  const result = await generateText({
    ...common, maxOutputTokens: 48, prompt: 'Invent a person: name and age, as JSON.',
    output: Output.object({ schema: Person, name: 'person' }),
  });
  assert.deepEqual(result.output, Person.parse(JSON.parse(result.text)));
  return { ...summary(result), text: result.text, output: result.output };
}

// Reasoning settings: 'default' is no model id the provider knows to reason, so it is forced.
const thinking = { forceReasoning: true, reasoningSummary: 'auto' };

async function reasoning() {
  const providerOptions = { openai: { ...thinking, store: false } };
  const first = streamText({ model, maxOutputTokens: 64, maxRetries: 0, prompt: '[[think]]', providerOptions });
  const parts = [];
  for await (const part of first.fullStream) {
    if (part.type === 'error') throw part.error;
    if (parts.at(-1) !== part.type) parts.push(part.type);
  }
  const messages = [{ role: 'user', content: '[[think]]' }, ...(await first.response).messages,
                    { role: 'user', content: 'And now?' }];
  const second = await generateText({ model, maxOutputTokens: 64, maxRetries: 0, messages, providerOptions });
  const sent = messages[1].content.map((part) => part.type);
  return { parts, reasoning: await first.reasoningText, text: await first.text, sent, second: second.text };
}

async function chat() {
  const providerOptions = { openai: thinking };
  const first = await generateText({ model, maxOutputTokens: 64, maxRetries: 0, prompt: '[[think]]', providerOptions });
  const previousResponseId = first.providerMetadata.openai.responseId;
  const second = await generateText({ model, maxOutputTokens: 64, maxRetries: 0, prompt: 'And now?',
                                      providerOptions: { openai: { ...thinking, previousResponseId } } });
  return { first: first.text, reasoning: first.reasoningText, previousResponseId, id: second.response.id,
           second: second.text };
}

async function history() {
  const bodies = [];
  const recording = createOpenAI({
    baseURL: process.env.GATEWAY_BASE_URL, apiKey: process.env.GATEWAY_API_KEY ?? 'unused',
    fetch: async (url, init) => { bodies.push(JSON.parse(init.body)); return fetch(url, init); },
  }).responses(process.env.GATEWAY_MODEL ?? 'default');
  const settings = { model: recording, maxOutputTokens: 64, maxRetries: 0, providerOptions: { openai: thinking } };
  const first = await generateText({ ...settings, prompt: '[[think]]' });
  const messages = [{ role: 'user', content: '[[think]]' }, ...first.response.messages,
                    { role: 'user', content: 'And now?' }];
  const second = await generateText({ ...settings, messages });
  assert.equal(bodies.length, 2);
  assert.equal(bodies[1].previous_response_id, undefined);
  return { first: first.text, reasoning: first.reasoningText, firstId: first.providerMetadata.openai.responseId,
           sent: bodies[1].input, store: bodies[1].store ?? null, id: second.response.id, second: second.text };
}

const cases = { text, stream, tool, object, reasoning, chat, history };
await runCase('ai_sdk.mjs', cases);
