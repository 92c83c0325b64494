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
//	s := &boot.System{Root: root, StateDir: "/var/lib/upgradectl", Config: cfg, Mode: host.ModeAutomatic, Out: w}
//	defer s.Close()
//	o, err := boot.Enter(ctx, s, boot.EnterOptions{Message: "...", Reboot: false, Locked: true})
//	o, err = boot.Exit(ctx, s, boot.ExitOptions{Reboot: true, Locked: true})
//	st, err := boot.Status(ctx, s) // st.In, st.Since, st.Halted, st.NextBoot, st.Problems...
//	boot.SetResumeAction("stage engine", func(ctx context.Context, s *boot.System) error { ... })
//
// Enter and Exit take the state-directory lock themselves unless the
// caller says it holds it (Locked). Both are idempotent: a rerun after a
// crash completes or undoes, and Enter keeps the first originals. Each
// appends one entry to the upgrade log.
//
// The resume action is the pending upgrade work that `upgradectl boot
// resume` runs at every boot into maintenance (upgradectl-resume.service);
// until SetResumeAction is called it is the post-upgrade health checks
// (check.Run with the post profile). It runs without the lock held, must be
// safe to run again after a crash or a reboot in its middle, and may itself
// call Exit (the last stage) or reboot. It is not run in the boot that
// entered maintenance (the caller is still at work then), nor when the
// kernel command line chose another unit for this boot. After
// MaxResumeFailures failed resumes in a row the hook stops acting and the
// banner says that manual intervention is needed; Resume with Reset clears
// that.
//
// Where systemd does not run the root (--root other than "/", a chroot, a
// rescue shell without systemd as PID 1) every function works on the files
// under the root only (default target link, units, banner, state) and says
// that the change takes effect at the next boot.
package boot
