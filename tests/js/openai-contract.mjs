// The npm openai client against a running `gptsharp serve`: node openai-contract.mjs <base-url> <model>.
// Each check asserts what the client hands its caller; the first failure exits non-zero with its message.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
const messages = [{ role: 'user', content: '床前明月光' }];
const checks = [];

// Streaming with include_usage and two choices: text per index, one usage chunk at the end.
{
  const stream = await client.chat.completions.create({ model, messages, stream: true, n: 2, seed: 7, max_tokens: 8, stream_options: { include_usage: true } });
  const text = ['', ''];
  const finish = [null, null];
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text[choice.index] += choice.delta?.content ?? '';
      finish[choice.index] ??= choice.finish_reason;
    }
  }
  assert.ok(usage && usage.completion_tokens >= 2 && usage.completion_tokens <= 16, `usage ${JSON.stringify(usage)}`);
  assert.ok(finish.every(f => f === 'stop' || f === 'length'), `finish ${finish}`);
  checks.push('stream n=2 include_usage');
}

// Log-probabilities: one entry per token, alternatives sorted, greedy takes the likeliest.
{
  const reply = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 6, logprobs: true, top_logprobs: 3 });
  const entries = reply.choices[0].logprobs.content;
  assert.ok(entries.length > 0);
  for (const entry of entries) {
    assert.equal(entry.top_logprobs.length, 3);
    assert.ok(Math.abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6);
  }
  assert.equal(Buffer.from(entries.flatMap(e => e.bytes)).toString('utf8'), reply.choices[0].message.content);
  checks.push('logprobs');
}

// A JSON schema response format: the content parses and holds what the schema requires.
{
  const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, days: { type: 'integer' } }, required: ['city', 'days'], additionalProperties: false };
  const reply = await client.chat.completions.create({ model, messages, max_tokens: 40, seed: 3, response_format: { type: 'json_schema', json_schema: { name: 'weather', schema, strict: true } } });
  const value = JSON.parse(reply.choices[0].message.content);
  assert.deepEqual(Object.keys(value).sort(), ['city', 'days']);
  assert.equal(typeof value.city, 'string');
  assert.ok(Number.isInteger(value.days));
  checks.push('response_format json_schema');
}

// Tools: a required call, streamed as tool-call deltas, then its result sent back.
{
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'] } } }];
  const stream = await client.chat.completions.create({ model, messages, tools, tool_choice: 'required', stream: true, max_tokens: 40, seed: 5 });
  let name = '', args = '', id = null, finish = null;
  for await (const chunk of stream) {
    for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) {
      id ??= call.id;
      name += call.function?.name ?? '';
      args += call.function?.arguments ?? '';
    }
    finish ??= chunk.choices[0]?.finish_reason ?? null;
  }
  assert.equal(name, 'get_weather');
  assert.equal(finish, 'tool_calls');
  assert.equal(typeof JSON.parse(args).city, 'string');
  const followUp = await client.chat.completions.create({
    model, tools, tool_choice: 'none', max_tokens: 6,
    messages: [...messages, { role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name, arguments: args } }] }, { role: 'tool', tool_call_id: id, content: '晴' }],
  });
  assert.notEqual(followUp.choices[0].finish_reason, 'tool_calls');
  checks.push('tools stream + tool message');
}

// A bad request is an APIError carrying the server's message and status.
{
  await assert.rejects(
    client.chat.completions.create({ model, messages, tools: [{ type: 'function', function: { name: 'a' } }], tool_choice: { type: 'function', function: { name: 'b' } } }),
    e => e.status === 400 && /not among 'tools'/.test(e.message));
  checks.push('400 as APIError');
}

// The Responses API, whole: output_text (the SDK's convenience) matches the streamed deltas of the same greedy request.
{
  const request = { model, input: '床前明月光', instructions: '你是詩人。', temperature: 0, max_output_tokens: 8 };
  const whole = await client.responses.create(request);
  assert.equal(whole.object, 'response');
  assert.ok(whole.usage.input_tokens > 0 && whole.usage.output_tokens >= 1, `usage ${JSON.stringify(whole.usage)}`);
  const stream = await client.responses.create({ ...request, stream: true });
  let deltas = '', types = [], completed = null;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') deltas += event.delta;
    if (event.type === 'response.completed' || event.type === 'response.incomplete') completed = event.response;
  }
  assert.equal(deltas, whole.output_text);
  assert.equal(types[0], 'response.created');
  assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)), types.join(','));
  assert.equal(completed.output[0].content[0].text, whole.output_text);
  checks.push('responses whole + stream');
}

// The Responses API, a function call streamed as argument deltas, its output sent back by previous_response_id.
{
  const tools = [{ type: 'function', name: 'get_weather', description: 'The weather in a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'] }, strict: true }];
  const stream = await client.responses.create({ model, input: '床前明月光', tools, tool_choice: 'required', stream: true, max_output_tokens: 40 });
  let args = '', done = null, response = null;
  for await (const event of stream) {
    if (event.type === 'response.function_call_arguments.delta') args += event.delta;
    if (event.type === 'response.output_item.done' && event.item.type === 'function_call') done = event.item;
    if (event.type === 'response.completed') response = event.response;
  }
  assert.equal(done.name, 'get_weather');
  assert.equal(args, done.arguments);
  assert.equal(typeof JSON.parse(args).city, 'string');
  const next = await client.responses.create({ model, previous_response_id: response.id, input: [{ type: 'function_call_output', call_id: done.call_id, output: '晴' }], tools, tool_choice: 'none', max_output_tokens: 6 });
  assert.equal(next.previous_response_id, response.id);
  assert.equal(next.output[0].type, 'message');
  checks.push('responses function call + previous_response_id');
}

// An unknown previous_response_id is a NotFoundError carrying OpenAI's error code.
{
  await assert.rejects(client.responses.create({ model, input: 'hi', previous_response_id: 'resp_unknown' }),
    e => e.status === 404 && e.code === 'previous_response_not_found');
  checks.push('responses 404');
}

console.log(JSON.stringify({ ok: true, checks }));
