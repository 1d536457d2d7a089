/* Links the core library only: prints a wire code and its description. */
#include <microstream/microstream.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  const char *wire = ms_err_to_wire(MS_ERR_TARGET_SERVICE_NOT_FOUND);
  if (!wire)
    return 1;
  printf("%s %s\n", MS_VERSION_STRING, wire);
  return ms_err_from_wire(wire, strlen(wire)) ==
                 MS_ERR_TARGET_SERVICE_NOT_FOUND
             ? 0
             : 1;
}
