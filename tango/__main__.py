from tango.cli import app

app(prog_name="tango")
