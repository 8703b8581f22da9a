/* Buffer arguments of the model's C extensions, checked one way for both (_kernels and _tiles). */
#ifndef PERCEPT_ARRAYS_H
#define PERCEPT_ARRAYS_H

#include <Python.h>
#include <string.h>

/* A C-contiguous buffer of `dims` dimensions whose format is one of `formats` (single characters). */
static int get_array(PyObject *object, Py_buffer *view, int writable, int dims, const char *formats,
                     const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@')
        format++;
    if (view->ndim != dims || strlen(format) != 1 || !strchr(formats, format[0])) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-D array of type '%s', got '%s' with %d dimensions",
                     name, dims, formats, view->format ? view->format : "B", view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    /* integers are read as int64_t: 'l' is 32 bits on Windows */
    if ((format[0] == 'l' || format[0] == 'q') && view->itemsize != 8) {
        PyErr_Format(PyExc_TypeError, "%s must hold 64-bit integers, got %zd-byte ones", name, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#endif
