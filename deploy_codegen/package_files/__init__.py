"""Files copied verbatim into every generated package (the package's own code).

They import nothing from Tango: a package runs with numpy, Pillow and its runtime only. The
service imports `runner` too, so the pre/post-processing it verifies is the one that ships.
"""
