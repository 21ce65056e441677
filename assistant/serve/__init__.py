"""The serving layer: the variants side by side (lineup), the OpenAI-compatible API and the Gradio app."""
