// Package boot switches a host into and out of maintenance mode and runs the
// boot-time hook that continues an upgrade after each reboot.
//
// Maintenance mode is a systemd target, upgradectl-maintenance.target, that
// keeps the basic system, networking, sshd, the gettys and the units the
// configuration names (maintenance.keep_units); every other unit (the
// applications) is stopped when it is isolated. While the host is in
// maintenance, non-root logins are refused with the maintenance message
// (/run/nologin, read by pam_nologin), the console issue and the motd show
// it, and the default target is the maintenance target, so that any reboot
// comes back into maintenance until Exit.
//
// The API for the stage engine:
//
//	s := &boot.System{Root: root, StateDir: "/var/lib/upgradectl", Config: cfg}
//	boot.Enter(ctx, s, boot.EnterOptions{Message: "...", Reboot: false})
//	boot.Exit(ctx, s, boot.ExitOptions{Reboot: true})
//	st, _ := boot.Status(ctx, s)        // st.In, st.Since, st.Halted, st.NextBoot...
//	boot.SetResumeAction(func(ctx context.Context, s *boot.System) error { ... })
//
// Enter and Exit take the state-directory lock themselves: a caller that
// holds it (the stage engine) passes it in EnterOptions.Locked /
// ExitOptions.Locked. The resume action is the pending upgrade work that
// `upgradectl boot resume` runs at every boot into maintenance (through
// upgradectl-resume.service); it must be safe to run again after a crash or
// a reboot in its middle. After MaxResumeFailures failed resumes in a row the
// hook stops acting and the banner says that manual intervention is needed.
//
// Where systemd does not run the root (--root other than "/", a chroot, a
// rescue shell without systemd as PID 1) every function works on the files
// under the root only (default target link, units, banner, state) and says
// that the change takes effect at the next boot.
package boot
