/* placeholder: the compiled chunker is being written */
#include <Python.h>
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "_chunker", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__chunker(void) { return PyModule_Create(&m); }
