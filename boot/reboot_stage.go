package boot

import (
	"context"

	"upgradectl/host"
)

// Reboot reboots the running host through systemd, as `systemctl reboot`
// does. The stage engine's roll uses it; the boot hook continues the stage
// after the reboot. Where systemd does not run the root it refuses.
func Reboot(ctx context.Context, s *System) error {
	if !s.Live() {
		return host.CannotRun("cannot reboot %s: systemd does not run it", s.Root.Dir())
	}
	sd, err := s.systemd()
	if err != nil {
		return err
	}
	return sd.Reboot(ctx)
}
