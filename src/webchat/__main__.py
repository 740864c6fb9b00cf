from webchat.cli import app

app(prog_name="webchat")
