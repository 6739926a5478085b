// Renders a Hugging Face chat template with @huggingface/jinja (the engine transformers.js uses), with enable_thinking false
// (Qwen3's non-thinking mode, the one GptSharp prompts in) and Llama 3.1/3.2's date fixed as GptSharp fixes it.
// stdin: {"template", "bos_token", "eos_token", "cases": [{"messages", "add_generation_prompt", "tools"?}]}; stdout: the rendered strings as a JSON array.
import { Template } from '@huggingface/jinja';
import { readFileSync } from 'node:fs';

const input = JSON.parse(readFileSync(0, 'utf8'));
const template = new Template(input.template);
const rendered = input.cases.map(c => template.render({
  messages: c.messages, add_generation_prompt: c.add_generation_prompt, bos_token: input.bos_token ?? '', eos_token: input.eos_token ?? '', enable_thinking: false, date_string: '26 Jul 2024',
  ...(c.tools ? { tools: c.tools } : {}),
}));
console.log(JSON.stringify(rendered));
