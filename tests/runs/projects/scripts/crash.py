"""Prints a little, then dies in native code (a null pointer read: SIGSEGV), as a rank does when a
C or C++ library it calls crashes."""

import ctypes

print("about to crash", flush=True)


def read_null_pointer():
    return ctypes.string_at(0)


read_null_pointer()
