//! One decoder for `LlamaForCausalLM`, `Qwen2ForCausalLM` and `MistralForCausalLM`,
//! built only from ops that record a backward, with Hugging Face checkpoints in and out.
