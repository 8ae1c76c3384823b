"""What people touch: the ``galsearch`` command line and the Gradio web app."""
