# jumpstarter_custom_driver/__init__.py
import subprocess

from jumpstarter.client import DriverClient
from jumpstarter.driver import Driver, export


def run_command(command: str, args: list[str]) -> str:
    """Run ``command`` with ``args`` (no shell); its output, or an error carrying stderr."""
    done = subprocess.run([command, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# exporter side
class CustomDriver(Driver):
    # required method returning the import path of the client class
    @classmethod
    def client(cls) -> str:
        return "jumpstarter_custom_driver.CustomClient"

    @export  # export the method to make it available from the client
    def execute(self, command: str, args: list[str]) -> str:  # only positional arguments
        result = run_command(command, args)  # run the command in shell, etc.
        return result


# client side
class CustomClient(DriverClient):
    def execute(self, command: str, args: list[str]) -> str:
        # self.call is provided by the DriverClient base class
        # which can be used to transparently call exporter side methods by name
        # the parameters and return values are serialized with protobuf
        # so make sure to only use simple types like list/dict
        return self.call("execute", command, args)

    # additional helper methods can also be provided
    def ls(self) -> str:
        return self.execute("ls", [])

    def rm(self, files: list[str]) -> str:
        return self.execute("rm", files)
