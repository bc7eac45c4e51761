"""The Gradio user interface: one module per tab. The only package that imports gradio.
Handlers stay thin: read widgets, call a service, format the result."""
