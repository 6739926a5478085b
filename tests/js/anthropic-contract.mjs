// The npm @anthropic-ai/sdk client against a running `gptsharp serve`: node anthropic-contract.mjs <base-url> <model> <api-key>.
// Each check asserts what the client hands its caller; the first failure exits non-zero with its message.
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

const [baseURL, model, apiKey] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });   // sends the key as x-api-key
const messages = [{ role: 'user', content: '床前明月光' }];
const checks = [];

// Whole and streamed: the same greedy text, the stream's events in Anthropic's order, and the SDK's final message.
{
  const request = { model, max_tokens: 8, temperature: 0, system: '你是詩人。', messages };
  const whole = await client.messages.create(request);
  assert.equal(whole.type, 'message');
  assert.equal(whole.role, 'assistant');
  assert.ok(['end_turn', 'max_tokens'].includes(whole.stop_reason), whole.stop_reason);
  assert.ok(whole.usage.input_tokens > 0 && whole.usage.output_tokens >= 1, JSON.stringify(whole.usage));
  const text = whole.content.map(b => b.text).join('');
  const stream = client.messages.stream(request);
  const types = [];
  let deltas = '';
  stream.on('streamEvent', event => types.push(event.type));
  stream.on('text', delta => { deltas += delta; });
  const final = await stream.finalMessage();
  assert.equal(deltas, text);
  assert.equal(final.content.map(b => b.text).join(''), text);
  assert.equal(final.stop_reason, whole.stop_reason);
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.ok(types.includes('content_block_start') && types.includes('message_delta'), types.join(','));
  checks.push('messages whole + stream');
}

// A stop sequence: the answer ends before it, and the message says which one stopped it.
{
  const whole = await client.messages.create({ model, max_tokens: 12, temperature: 0, messages });
  const text = whole.content.map(b => b.text).join('');
  if (text.length >= 2) {
    const stop = text.slice(1, 2);
    const cut = await client.messages.create({ model, max_tokens: 12, temperature: 0, messages, stop_sequences: [stop] });
    assert.equal(cut.stop_reason, 'stop_sequence');
    assert.equal(cut.stop_sequence, stop);
    assert.equal(cut.content.map(b => b.text).join(''), text.slice(0, text.indexOf(stop)));
  }
  checks.push('stop_sequences');
}

// Tools: a forced tool_use block (its input an object), streamed as input_json_delta, then a tool_result answering it.
{
  const tools = [{ name: 'get_weather', description: 'The weather in a city', input_schema: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'] } }];
  const stream = client.messages.stream({ model, max_tokens: 40, messages, tools, tool_choice: { type: 'any' } });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  const use = final.content.find(b => b.type === 'tool_use');
  assert.equal(use.name, 'get_weather');
  assert.equal(typeof use.input.city, 'string');
  const next = await client.messages.create({
    model, max_tokens: 6, tools, tool_choice: { type: 'none' },
    messages: [...messages, { role: 'assistant', content: final.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '晴' }] }],
  });
  assert.notEqual(next.stop_reason, 'tool_use');
  // count_tokens counts the prompt a request would be answered from: the tools' names in the system turn add tokens.
  const counted = await client.messages.countTokens({ model, messages, tools });
  const plain = await client.messages.countTokens({ model, messages });
  const answered = await client.messages.create({ model, max_tokens: 1, messages });
  assert.equal(plain.input_tokens, answered.usage.input_tokens);
  assert.ok(counted.input_tokens > plain.input_tokens, JSON.stringify({ counted, plain }));
  checks.push('tools + tool_result + count_tokens');
}

// Errors in Anthropic's shape: a tool_result answering no tool_use, and max_tokens missing, are BadRequestErrors naming the field.
{
  await assert.rejects(client.messages.create({ model, max_tokens: 4, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_none', content: 'x' }] }] }),
    e => e.status === 400 && e.error?.error?.type === 'invalid_request_error' && /messages\.0\.content\.0\.tool_use_id/.test(e.message));
  await assert.rejects(client.messages.create({ model, messages }),
    e => e.status === 400 && /max_tokens/.test(e.message));
  await assert.rejects(new Anthropic({ baseURL, apiKey: 'wrong', maxRetries: 0 }).messages.create({ model, max_tokens: 4, messages }),
    e => e.status === 401 && e.error?.error?.type === 'authentication_error');
  checks.push('errors');
}

console.log(JSON.stringify({ ok: true, checks }));
