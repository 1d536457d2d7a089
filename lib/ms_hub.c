/* placeholder: being written */
typedef int ms_placeholder_ms_hub;
